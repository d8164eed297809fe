"""Names of the reported metrics and one sentence each on how to read them."""
from __future__ import annotations

EMBEDDER_METRICS = (
    "silhouette_cosine", "knn_accuracy_k1", "knn_accuracy_k5", "probe_accuracy",
    "probe_macro_f1", "v_measure", "adjusted_rand", "within_total_variance_ratio",
)
PAIR_METRICS = (
    "cka_linear", "rsa_spearman", "rsa_mantel_p", "knn_jaccard_k10",
    "centroid_matrix_correlation", "retrieval_recall_at_1", "retrieval_recall_at_5",
    "retrieval_recall_at_10", "retrieval_mrr",
)
# metrics drawn in the per-embedder bar chart (all live on a 0..1-ish scale)
BAR_METRICS = EMBEDDER_METRICS

METRIC_HELP = {
    "silhouette_cosine": "Mean silhouette with cosine distance, -1..1: near 1 = tight, well "
                         "separated classes; near 0 = overlapping classes; negative = items sit "
                         "closer to another class.",
    "knn_accuracy_k1": "Leave-one-out 1-nearest-neighbour accuracy (cosine): fraction of items "
                       "whose nearest other item has the same class; compare with the "
                       "majority-class rate.",
    "knn_accuracy_k5": "Leave-one-out 5-nearest-neighbour majority-vote accuracy (cosine); "
                       "less sensitive to single near-duplicates than k=1.",
    "probe_accuracy": "Accuracy of a cross-validated linear classifier (standardised features, "
                      "logistic regression), folds grouped by pair id so no piece is on both "
                      "sides: how linearly decodable the classes are.",
    "probe_macro_f1": "Macro-averaged F1 of the same probe: every class counts equally, so it "
                      "drops when small classes are missed.",
    "v_measure": "Agreement (0..1) between k-means clusters (k = number of classes, on unit "
                 "vectors) and the labels; 1 = clusters reproduce the classes.",
    "adjusted_rand": "Adjusted Rand index between the same k-means clusters and the labels: "
                     "0 = chance agreement, 1 = identical partitions.",
    "within_total_variance_ratio": "Within-class scatter / total scatter (trace ratio), 0..1, "
                                   "scale-free: lower = classes occupy distinct regions; 1 = "
                                   "class means coincide.",
    "cka_linear": "Linear centred kernel alignment, 0..1: 1 = the two spaces have the same "
                  "geometry up to rotation and scale on the shared items.",
    "rsa_spearman": "Spearman correlation between the two spaces' pairwise cosine-distance "
                    "matrices: high = items that are close in one space are close in the "
                    "other.",
    "rsa_mantel_p": "Mantel permutation p-value of the RSA correlation (items permuted): small "
                    "(e.g. < 0.05) = the agreement is unlikely by chance.",
    "knn_jaccard_k10": "Mean Jaccard overlap of each shared item's 10 nearest neighbours in the "
                       "two spaces: 1 = identical neighbourhoods, about k/n = chance.",
    "centroid_matrix_correlation": "Correlation of the off-diagonal class-centroid cosine "
                                   "similarities: high = both spaces agree on which classes "
                                   "are alike.",
    "retrieval_recall_at_1": "Held-out cross-space retrieval after PCA + orthogonal Procrustes "
                             "fitted on training pairs: fraction of queries whose partner "
                             "ranks first; compare with the chance level k/n_test.",
    "retrieval_recall_at_5": "As recall@1, partner within the top 5.",
    "retrieval_recall_at_10": "As recall@1, partner within the top 10.",
    "retrieval_mrr": "Mean reciprocal rank of the partner among held-out items (1 = always "
                     "first); compare with the expected MRR of random ranking.",
}
