"""The generated findings paragraph (issue 21), on hand-made metrics dicts."""
import copy

from analysis.findings import findings, findings_paragraph, side_by_side_rows


def emb(n, **values):
    return {"n_items": n, **{k: {"value": v, "ci95": None} for k, v in values.items()}}


def comp(metric, a, b, va, vb, p, p_holm=None, ci=(0.02, 0.18), n=140, units=140, **kw):
    return {"metric": metric, "a": a, "b": b, "value_a": va, "value_b": vb,
            "difference": va - vb, "ci95": list(ci), "p_value": p, "p_holm": p_holm,
            "test": "mcnemar exact (two-sided binomial on discordant items)", "n_items": n,
            "n_units": units, **kw}


def base():
    return {"embedders": {"audio-stats": emb(140, knn_accuracy_k1=0.557, probe_accuracy=0.70),
                          "midi-stats": emb(149, knn_accuracy_k1=0.678, probe_accuracy=0.86)},
            "comparisons": [
                comp("knn_accuracy_k1", "audio-stats", "midi-stats", 0.557, 0.657, 0.004,
                     0.008, ci=(-0.18, -0.02)),
                comp("probe_accuracy", "audio-stats", "midi-stats", 0.70, 0.72, 0.40, 0.40,
                     ci=(-0.08, 0.04))]}


def test_states_only_the_holm_significant_difference_with_its_numbers():
    text = findings(base())
    assert text[0].startswith("The embedders were scored on different items (audio-stats on "
                              "140, midi-stats on 149)")
    sig = [s for s in text if s.startswith("On ")]
    assert sig == ["On knn_accuracy_k1, midi-stats scores higher than audio-stats: 0.657 vs "
                   "0.557, a difference of 0.100 (95 % CI 0.020 to 0.180; mcnemar exact, "
                   "Holm-adjusted p = 0.008; 140 shared items)."]
    assert "1 of 2 comparisons differ at 5% after Holm correction" in " ".join(text)
    assert "probe_accuracy," not in " ".join(text)


def test_holm_is_computed_when_the_entries_lack_it():
    m = base()
    for c in m["comparisons"]:
        c.pop("p_holm")
    m["comparisons"][0]["p_value"] = 0.03  # Holm over 2: 0.06 -> not significant
    text = findings_paragraph(m)
    assert "No difference between embedders is significant at 5% after Holm correction " \
           "across the 2 comparisons made (smallest adjusted p = 0.060)." in text
    assert "On knn" not in text


def test_nothing_significant_and_pieces_stated():
    m = base()
    m["comparisons"][0].update(p_value=0.2, p_holm=0.4)
    text = findings_paragraph(m)
    assert "No difference between embedders is significant" in text
    m["comparisons"][0].update(p_value=0.0001, p_holm=0.0002, n_units=70)
    assert "Holm-adjusted p < 0.001; 140 shared items, 70 independent pieces)" in \
        findings_paragraph(m)


def test_ceiling_effect_named():
    m = {"embedders": {"a": emb(40, knn_accuracy_k1=0.975, probe_accuracy=0.90),
                       "b": emb(40, knn_accuracy_k1=1.0, probe_accuracy=0.99)},
         "comparisons": [comp("knn_accuracy_k1", "a", "b", 0.975, 1.0, 1.0, 1.0, n=40,
                              units=40)]}
    text = findings(m)
    assert text[0] == "Each of the 2 embedders was scored on 40 items."
    assert text[-1] == ("Every embedder scores at least 0.95 on knn_accuracy_k1 (lowest 0.975): "
                        "the collection is too easy to rank them on this metric.")


def test_one_embedder_no_comparisons():
    m = {"embedders": {"solo": emb(30, knn_accuracy_k1=0.96, knn_balanced_accuracy_k1=0.97)}}
    text = findings(m)
    assert text[0] == "solo was scored on 30 items."
    assert text[1] == "Only one embedder (solo): nothing to compare."
    assert "knn_accuracy_k1, knn_balanced_accuracy_k1 (lowest 0.960)" in text[2]
    assert "these metrics cannot show" in text[2]
    assert findings({}) == ["No embedder was analysed."]


def test_undefined_values_and_untestable_comparisons():
    m = base()
    m["embedders"]["audio-stats"]["probe_accuracy"]["value"] = None
    m["comparisons"].append(comp("knn_accuracy_k5", "audio-stats", "midi-stats", 0.5, 0.5,
                                 None, None, note="undefined"))
    m["comparisons"][-1].update(value_a=None, difference=None)
    m["comparisons"].append({"metric": None, "a": "x", "b": "y", "note": "fewer than 2 shared "
                             "items (matched by item id)"})
    text = findings(m)
    assert "1 comparison had no defined value and could not be tested." in text
    assert "x and y were not compared: fewer than 2 shared items (matched by item id)." in text
    m["comparisons"] = []
    assert "No paired comparison between embedders could be tested." in findings(m)


def test_deterministic_and_input_untouched():
    m = base()
    before = copy.deepcopy(m)
    assert findings_paragraph(m) == findings_paragraph(copy.deepcopy(m))
    assert m == before


def test_side_by_side_keeps_all_items_and_shared_items_apart():
    rows = side_by_side_rows(base())
    assert len(rows) == 2
    r = rows[0]
    assert (r["a"], r["b"], r["metric"]) == ("audio-stats", "midi-stats", "knn_accuracy_k1")
    assert (r["a_all"], r["n_a_all"], r["b_all"], r["n_b_all"]) == (0.557, 140, 0.678, 149)
    assert (r["a_shared"], r["b_shared"], r["n_shared"]) == (0.557, 0.657, 140)
    assert r["p_holm"] == 0.008
    m = base()
    m["comparisons"].append({"metric": None, "a": "x", "b": "y"})
    del m["embedders"]["midi-stats"]
    rows = side_by_side_rows(m)
    assert len(rows) == 2 and rows[0]["b_all"] is None and rows[0]["n_b_all"] is None
