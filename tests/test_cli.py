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
    from embedders import available_embedders
    if not {"openl3", "clamp2"} <= set(available_embedders()):
        pytest.skip("openl3/clamp2 embedders not present in this checkout")
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
                                        "status,cached,reason")
    assert "rock/bad.mid" in manifest and "skipped" in manifest
