#pragma once
// Rank correlations between two score lists of equal length: how well one
// evaluator (a proxy, a predictor, a short training) orders candidates
// against a ground truth. Both handle ties (tau-b; Spearman over average
// ranks) and return NaN when a list is constant or has fewer than 2 items.
#include <cstddef>
#include <vector>

namespace minas {

// Kendall's tau-b: (concordant - discordant) / sqrt((n0 - n1)(n0 - n2)),
// with n1, n2 the pairs tied in x and in y. O(n^2): meant for the few
// thousand points a table holds.
double kendall_tau(const std::vector<double>& x, const std::vector<double>& y);

// Spearman's rho: Pearson's correlation of the average ranks.
double spearman_rho(const std::vector<double>& x, const std::vector<double>& y);

// Average ranks from 1 (ties share the mean of their positions).
std::vector<double> average_ranks(const std::vector<double>& x);

}  // namespace minas
