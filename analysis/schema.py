"""Names of the reported metrics and one sentence each on how to read them."""
from __future__ import annotations

EMBEDDER_METRICS = (
    "silhouette_cosine", "knn_accuracy_k1", "knn_accuracy_k5", "knn_balanced_accuracy_k1",
    "knn_balanced_accuracy_k5", "probe_accuracy", "probe_balanced_accuracy", "probe_macro_f1",
    "v_measure", "adjusted_rand", "within_total_variance_ratio",
    "within_total_variance_ratio_raw",
)
PAIR_METRICS = (
    "cka_debiased", "cka_linear", "cka_permutation_p", "rsa_spearman", "rsa_mantel_p",
    "knn_jaccard_k10", "centroid_matrix_correlation", "retrieval_recall_at_1",
    "retrieval_recall_at_5", "retrieval_recall_at_10", "retrieval_mrr",
)
#: Recommendation quality (leave-one-out top-k as recommendations; analysis/recommendation.py).
#: Not in the separability bars: hubness skewness is unbounded.
RECOMMEND_METRICS = (
    "recommend_precision_at_5", "recommend_precision_at_10", "recommend_coverage_at_10",
    "hubness_skewness_k10", "hubness_never_recommended_k10",
)
#: Suffix of the same metrics with mutual proximity (``--hubness-reduction mp``).
MP_SUFFIX = "_mp"


def recommend_metric_names(entries) -> list:
    """The recommendation metrics present in an embedder entry, or in any entry of a dict of
    them: the plain ones, then their mutual-proximity twins when computed."""
    entries = [entries] if "n_items" in entries else list(entries.values())
    mp = any(f"{m}{MP_SUFFIX}" in e for e in entries for m in RECOMMEND_METRICS)
    names = list(RECOMMEND_METRICS)
    if mp:
        names = [n for m in RECOMMEND_METRICS for n in (m, f"{m}{MP_SUFFIX}")]
    return names


#: p-values: reported without an interval
P_VALUES = ("cka_permutation_p", "rsa_mantel_p")

METRIC_HELP = {
    "recommend_precision_at_5": "Share of each item's 5 nearest other items (cosine, "
                                "leave-one-out: its recommendations) with its label; Wilson "
                                "interval over the n*5 judgements (optimistic: lists overlap); "
                                "compare with params.chance. Cross-modal same-piece hits are the "
                                "retrieval_* metrics between embedders.",
    "recommend_precision_at_10": "As recommend_precision_at_5 with 10 recommendations.",
    "recommend_coverage_at_10": "Share of items in at least one item's top-10: how much of the "
                                "collection a nearest-neighbour recommender ever recommends.",
    "hubness_skewness_k10": "Skewness of the 10-occurrence distribution (how often each item is "
                            "in others' top-10; Radovanovic et al., JMLR 2010): near 0 = fair; "
                            "large positive = a few hubs recommended to everyone.",
    "hubness_never_recommended_k10": "Share of items in no one's top-10 (anti-hubs): what a "
                                     "listener would never be recommended.",
    "silhouette_cosine": "Mean silhouette with cosine distance, -1..1: near 1 = tight, well "
                         "separated classes; near 0 = overlapping classes; negative = items sit "
                         "closer to another class.",
    "knn_accuracy_k1": "Leave-one-out 1-nearest-neighbour accuracy (cosine): fraction of items "
                       "whose nearest other item has the same class; compare with the "
                       "majority-class rate (params.chance_majority), not with 1/classes.",
    "knn_accuracy_k5": "Leave-one-out 5-nearest-neighbour majority-vote accuracy (cosine); "
                       "less sensitive to single near-duplicates than k=1.",
    "knn_balanced_accuracy_k1": "Mean over classes of the 1-NN recall: every class counts "
                                "equally, so predicting the big class earns nothing; chance is "
                                "1/classes (params.chance_uniform) whatever the class sizes.",
    "knn_balanced_accuracy_k5": "Balanced accuracy of the 5-NN majority vote; chance "
                                "1/classes. Far below knn_accuracy_k5 = the accuracy comes "
                                "from the large classes.",
    "probe_balanced_accuracy": "Mean per-class recall of the same probe: chance is 1/classes; "
                               "read it instead of probe_accuracy when classes are imbalanced.",
    "probe_accuracy": "Accuracy of a cross-validated linear classifier (standardised features, "
                      "logistic regression), folds grouped by pair id so no piece is on both "
                      "sides: how linearly decodable the classes are.",
    "probe_macro_f1": "Macro-averaged F1 of the same probe: every class counts equally, so it "
                      "drops when small classes are missed.",
    "v_measure": "Agreement (0..1) between k-means clusters (k = number of classes, on unit "
                 "vectors) and the labels; 1 = clusters reproduce the classes.",
    "adjusted_rand": "Adjusted Rand index between the same k-means clusters and the labels: "
                     "0 = chance agreement, 1 = identical partitions.",
    "within_total_variance_ratio": "Within-class scatter / total scatter (trace ratio) of the "
                                   "L2-normalised vectors, 0..1, scale-free (also per item): "
                                   "lower = classes occupy distinct directions; 1 = class "
                                   "means coincide.",
    "within_total_variance_ratio_raw": "The same ratio on the raw vectors (the earlier "
                                       "definition): moves when single items are rescaled, so "
                                       "compare embedders with the normalised one.",
    "cka_debiased": "Linear CKA from the unbiased HSIC estimator: about 0 for unrelated spaces "
                    "at any n and dimension (may dip slightly below), 1 = same geometry up to "
                    "rotation and scale; the main cross-space similarity.",
    "cka_linear": "Plain (biased) linear CKA, 0..1, kept for continuity: it sits well above 0 "
                  "for unrelated spaces when n is small or the dimension high (compare with "
                  "cka_debiased).",
    "cka_permutation_p": "Permutation p-value of cka_debiased with the pairing of items "
                         "shuffled: small (e.g. < 0.05) = the shared geometry is unlikely by "
                         "chance; params.null_q95 is what chance alone reaches.",
    "rsa_spearman": "Spearman correlation between the two spaces' pairwise cosine-distance "
                    "matrices (centred vectors): high = items that are close in one space are "
                    "close in the other.",
    "rsa_mantel_p": "Mantel permutation p-value of the RSA correlation (items permuted): small "
                    "(e.g. < 0.05) = the agreement is unlikely by chance.",
    "knn_jaccard_k10": "Mean Jaccard overlap of each shared item's 10 nearest neighbours "
                       "(cosine, centred vectors) in the two spaces: 1 = identical "
                       "neighbourhoods; chance (params.chance) is about k/(2(n-1)-k).",
    "centroid_matrix_correlation": "Correlation of the off-diagonal (centred) class-centroid "
                                   "cosine similarities: high = both spaces agree on which "
                                   "classes are alike.",
    "retrieval_recall_at_1": "Held-out cross-space retrieval after PCA + orthogonal Procrustes "
                             "fitted on training pairs, averaged over repeated stratified "
                             "splits: fraction of queries whose partner ranks first; compare "
                             "with the chance level k/n_test (split spread in params).",
    "retrieval_recall_at_5": "As recall@1, partner within the top 5.",
    "retrieval_recall_at_10": "As recall@1, partner within the top 10.",
    "retrieval_mrr": "Mean reciprocal rank of the partner among held-out items (1 = always "
                     "first); compare with the expected MRR of random ranking.",
}
for _m in RECOMMEND_METRICS:
    METRIC_HELP[f"{_m}{MP_SUFFIX}"] = (f"{_m} with neighbours ranked by mutual proximity "
                                       "(Schnitzer et al., JMLR 2012) instead of cosine: read it "
                                       "beside the plain value to see the effect of hubness "
                                       "reduction.")
