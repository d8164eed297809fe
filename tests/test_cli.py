"""The command line: params files, overrides, exit codes, messages."""
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

import cli
from cli import compare as cmd
from cli import params
import toy_embedders  # noqa: F401  (registers toy-audio / toy-midi)
from conftest import ROOT, write_midi, write_wav

ISSUE_PARAMS = """\
# Path to the dataset directory
--dataset dataset/songs
# Embedding methods to use (clamp2, openl3, or both)
--emb-methods both
--emb-dir results/embeddings/songs
--input-repr mel256
--embedding-size 512
# Plot title, plot method (tsne, pca, or both), and directory to save plots
--plot Plot both results/songs/plots
# Cosine similarity plot directory and variance directory
--calc-metrics results/songs/plots results/songs/variance
"""


def test_issue_params_file_parses_unchanged(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text(ISSUE_PARAMS)
    args = cmd.parse_args(["--params-file", str(f)])
    assert args.dataset == "dataset/songs" and args.emb_methods == "both"
    assert args.emb_dir == "results/embeddings/songs"
    assert args.input_repr == "mel256" and args.embedding_size == 512
    assert args.plot == ["Plot", "both", "results/songs/plots"]
    assert args.calc_metrics == ["results/songs/plots", "results/songs/variance"]
    assert cmd.selected_embedders(args) == ["openl3", "clamp2"]
    opts = cmd.embedder_options(args, ["openl3", "clamp2"])
    assert opts["openl3"]["input_repr"] == "mel256" and opts["openl3"]["embedding_size"] == 512
    assert "input_repr" not in opts["clamp2"]


def test_repository_params_files_parse():
    for name in ("ex_params.txt", "ex_params_demo.txt"):
        args = cmd.parse_args(["--params-file", str(ROOT / name)])
        assert args.dataset


def test_command_line_overrides_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text(ISSUE_PARAMS)
    args = cmd.parse_args(["--embedding-size", "6144", "--params-file", str(f),
                            "--dataset", "other"])
    assert args.embedding_size == 6144 and args.dataset == "other"
    assert args.emb_methods == "both"


def test_several_flags_per_line_quotes_and_inline_comments(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text('--dataset "my data/x#1"  --seed 3   # trailing comment\n\n'
                 "--plot 'A title' pca out#dir\n")
    args = cmd.parse_args(["--params-file", str(f)])
    assert args.dataset == "my data/x#1" and args.seed == 3
    assert args.plot == ["A title", "pca", "out#dir"]


def test_nested_params_files_and_cycles(tmp_path):
    (tmp_path / "inner.txt").write_text("--seed 7\n")
    (tmp_path / "outer.txt").write_text("--params-file inner.txt\n--dataset d\n")
    args = cmd.parse_args(["--params-file", str(tmp_path / "outer.txt")])
    assert args.seed == 7 and args.dataset == "d"
    (tmp_path / "self.txt").write_text("--params-file self.txt\n")
    with pytest.raises(cli.UsageError, match="includes itself"):
        cmd.parse_args(["--params-file", str(tmp_path / "self.txt")])
    with pytest.raises(cli.UsageError, match="does not exist"):
        cmd.parse_args(["--params-file", str(tmp_path / "missing.txt")])


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"),
                                               blacklist_characters="\"'\\#"),
                        min_size=1, max_size=8), max_size=6))
def test_tokenizer_round_trips_quoted_words(words):
    line = " ".join('"' + w + '"' for w in words) + "  # comment"
    assert params.tokenize_params_line(line) == words
    plain = [w for w in words if "#" not in w]
    assert params.tokenize_params_line(" ".join(plain)) == plain


def test_unclosed_quote_is_a_usage_error():
    with pytest.raises(cli.UsageError, match="unclosed"):
        params.tokenize_params_line('--plot "abc both x')


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "d", "--bogus"], "unrecognized arguments: --bogus"),
    (["--dataset"], "expected one argument"),
    (["--emb-methods", "all", "--dataset", "d"], "invalid choice"),
    (["--dataset", "d", "--plot", "T", "umap", "dir"], "tsne, pca or both"),
    (["--dataset", "d", "--workers", "0"], "positive integer"),
    (["--seed", "1"], "--dataset is required"),
])
def test_usage_errors_are_one_line_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1



@pytest.mark.parametrize("argv, start", [
    (["index", "--bogus"], "main.py index: error: unrecognized arguments: --bogus"),
    (["recommend", "q.wav"], "main.py recommend: error: the following arguments are required"),
    (["serve", "--port", "x"], "main.py serve: error: argument --port: invalid int value"),
    (["train", "--method", "byol"], "main.py train: error: argument --method: invalid choice"),
    (["prepare", "crop"], "main.py prepare crop: error: the following arguments are required"),
])
def test_every_subcommand_says_a_usage_error_in_one_line(argv, start, capsys):
    """One printer (common/exits.py) for every command: ``PROG: error: REASON``, exit 2."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(start) and len(err.splitlines()) == 1, err


def test_configuration_errors_stop_before_work(tmp_path, capsys):
    write_midi(tmp_path / "data" / "a" / "x.mid")
    assert cli.main(["--dataset", str(tmp_path / "none"), "--embedders", "toy-midi"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["--dataset", str(tmp_path / "data"), "--embedders", "nope"]) == 2
    assert "unknown embedder 'nope'" in capsys.readouterr().err
    assert cli.main(["--dataset", str(tmp_path / "data"), "--embedders", "toy-midi",
                      "--set", "toy-midi.colour=red", "--out", str(tmp_path / "o")]) == 2
    assert "has no option(s) colour" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["--dataset", str(tmp_path / "data"), "--embedders", "toy-midi",
                      "--out", str(blocker / "sub")]) == 2
    assert "cannot be written" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("manifest.csv"))


def test_set_option_reaches_the_embedder(tmp_path):
    args = cmd.parse_args(["--dataset", "d", "--embedders", "toy-midi",
                            "--set", "toy-midi.bins=4"])
    plan = cmd.RunPlan(args)
    assert plan.embedders[0].options["bins"] == 4


def _set_options(*items, embedders=("openl3", "clamp2")):
    argv = ["--dataset", "d", "--embedders", *embedders]
    for item in items:
        argv += ["--set", item]
    return cmd.embedder_options(cmd.parse_args(argv), list(embedders))


def test_set_reads_values_as_the_declared_option_type():
    opts = _set_options("openl3.weights=2024", "openl3.center=off", "openl3.hop_size=1",
                        "openl3.embedding_size=512", "openl3.device=None",
                        "clamp2.batch_size=8", "clamp2.weights=007.pth")
    assert opts["openl3"]["weights"] == "2024"  # a folder named 2024 stays a string
    assert opts["openl3"]["center"] is False
    assert opts["openl3"]["hop_size"] == 1.0 and isinstance(opts["openl3"]["hop_size"], float)
    assert opts["openl3"]["embedding_size"] == 512
    assert opts["openl3"]["device"] is None
    assert opts["clamp2"]["batch_size"] == 8 and type(opts["clamp2"]["batch_size"]) is int
    assert opts["clamp2"]["weights"] == "007.pth"
    for word, value in (("TRUE", True), ("yes", True), ("On", True), ("1", True),
                        ("false", False), ("NO", False), ("off", False), ("0", False)):
        assert _set_options(f"openl3.center={word}")["openl3"]["center"] is value
    # the value is checked when the embedder is built, as any other value
    assert cmd.RunPlan(cmd.parse_args(["--dataset", "d", "--embedders", "openl3", "--set",
                                       "openl3.weights=2024"])).embedders[0].options[
        "weights"] == "2024"


@pytest.mark.parametrize("item, message", [
    ("openl3.hop_size=abc", "openl3.hop_size must be a number, got 'abc'"),
    ("openl3.center=maybe", "openl3.center must be true or false"),
    ("clamp2.batch_size=8.5", "clamp2.batch_size must be an integer, got '8.5'"),
    ("openl3.input_repr=mel64", "input_repr must be one of"),
    ("openl3.colour=red", "has no option(s) colour"),
])
def test_set_with_a_wrong_value_is_a_one_line_usage_error(item, message, tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = cli.main(["--dataset", str(tmp_path / "d"), "--embedders", "openl3", "clamp2",
                     "--out", str(tmp_path / "o"), "--set", item])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_every_registered_option_has_a_declared_type():
    from embedders import available_embedders
    from embedders.base import OPTION_TYPES

    registry = available_embedders()
    assert {"openl3", "clamp2", "audio-stats", "midi-stats"} <= set(registry)
    for name, cls in registry.items():
        types = cls.declared_option_types()
        assert set(types) == set(cls.option_defaults), name
        assert all(t in OPTION_TYPES for t in types.values()), name
        for option, default in cls.option_defaults.items():
            if default is not None:  # a default reads back as itself
                assert cls.coerce_option(option, str(default)) == default, (name, option)


def test_register_refuses_an_option_without_a_type():
    from embedders import AUDIO, Embedder, register

    class Untyped(Embedder):
        name, modality = "untyped-test", AUDIO
        option_defaults = {"path": None}

    with pytest.raises(TypeError, match="need a type"):
        register(Untyped)


def test_help_documents_every_flag():
    out = subprocess.run([sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag in ("--params-file", "--dataset", "--emb-methods", "--embedders", "--emb-dir",
                 "--out", "--device", "--batch-size", "--workers", "--seed", "--plot",
                 "--calc-metrics", "--input-repr", "--embedding-size", "--content-type",
                 "--hop-size", "--center", "--openl3-weights", "--clamp2-weights"):
        assert flag in out


def test_embed_only_run_writes_manifest_and_summary(tmp_path, capsys):
    data = tmp_path / "data"
    write_wav(data / "rock" / "a.wav")
    write_midi(data / "rock" / "a.mid")
    (data / "rock" / "bad.mid").write_bytes(b"BAD!not midi")
    code = cli.main(["--dataset", str(data), "--embedders", "toy-audio", "toy-midi",
                      "--out", str(tmp_path / "out"), "--emb-dir", str(tmp_path / "emb"),
                      "--no-analysis", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "toy-midi" in out and "marked bad for the test" in out
    manifest = (tmp_path / "out" / "manifest.csv").read_text()
    assert manifest.splitlines()[0] == ("path,label,modality,pair_id,content_hash,embedder,"
                                        "status,cached,reason,note")
    assert "rock/bad.mid" in manifest and "skipped" in manifest
