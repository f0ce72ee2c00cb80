#pragma once
// Two-objective Pareto tools for NSGA-II style selection: value is maximized,
// cost minimized. Fast non-dominated sorting and crowding distance (Deb et al.
// 2002) and the exact hypervolume of a 2-D point set.
#include <cstddef>
#include <vector>

namespace minas::pareto {

struct Point {
  double value = 0;  // higher is better
  double cost = 0;   // lower is better
};

// a is at least as good in both and better in one.
inline bool dominates(const Point& a, const Point& b) {
  return a.value >= b.value && a.cost <= b.cost && (a.value > b.value || a.cost < b.cost);
}

// The non-dominated rank of every point: 0 for the front, 1 for the front of
// what remains, and so on.
std::vector<int> ranks(const std::vector<Point>& points);

// NSGA-II's crowding distance of every point within its own rank: the sum over
// both objectives of the normalized gap between its neighbours; the extremes
// of each front get infinity.
std::vector<double> crowding(const std::vector<Point>& points, const std::vector<int>& rank);

// The area dominated by the points and bounded by the reference point (a value
// below every point's, a cost above): points outside the box add nothing.
double hypervolume(std::vector<Point> points, const Point& reference);

}  // namespace minas::pareto
