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
#: p-values: reported without an interval
P_VALUES = ("cka_permutation_p", "rsa_mantel_p")

METRIC_HELP = {
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
