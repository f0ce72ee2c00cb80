#include "controller/pareto.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace minas::pareto {

std::vector<int> ranks(const std::vector<Point>& points) {
  // Sorted by value descending, then cost ascending, a point can only be
  // dominated by points before it; peeling fronts this way is O(n^2) at worst
  // and O(n log n) for a population of one front.
  const size_t n = points.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (points[a].value != points[b].value) return points[a].value > points[b].value;
    return points[a].cost < points[b].cost;
  });
  std::vector<int> rank(n, -1);
  // best_cost[r]: the lowest cost among points already placed in front r. A
  // point belongs to the first front whose lowest cost is above its own
  // (strictly: an equal point is not dominated).
  std::vector<double> best_cost;
  std::vector<Point> best_point;
  for (size_t i : order) {
    const Point& p = points[i];
    size_t r = 0;
    while (r < best_cost.size() && dominates(best_point[r], p)) ++r;
    if (r == best_cost.size()) {
      best_cost.push_back(p.cost);
      best_point.push_back(p);
    } else if (p.cost < best_cost[r]) {
      best_cost[r] = p.cost;
      best_point[r] = p;
    }
    rank[i] = static_cast<int>(r);
  }
  return rank;
}

std::vector<double> crowding(const std::vector<Point>& points, const std::vector<int>& rank) {
  const size_t n = points.size();
  std::vector<double> d(n, 0.0);
  const int fronts = n ? *std::max_element(rank.begin(), rank.end()) + 1 : 0;
  for (int f = 0; f < fronts; ++f) {
    std::vector<size_t> members;
    for (size_t i = 0; i < n; ++i)
      if (rank[i] == f) members.push_back(i);
    for (int objective = 0; objective < 2; ++objective) {
      auto get = [&](size_t i) { return objective == 0 ? points[i].value : points[i].cost; };
      std::stable_sort(members.begin(), members.end(),
                       [&](size_t a, size_t b) { return get(a) < get(b); });
      const double span = get(members.back()) - get(members.front());
      d[members.front()] = d[members.back()] = std::numeric_limits<double>::infinity();
      if (span <= 0) continue;
      for (size_t k = 1; k + 1 < members.size(); ++k)
        d[members[k]] += (get(members[k + 1]) - get(members[k - 1])) / span;
    }
  }
  return d;
}

double hypervolume(std::vector<Point> points, const Point& reference) {
  std::erase_if(points, [&](const Point& p) {
    return !(p.value > reference.value && p.cost < reference.cost);
  });
  // Sweep by cost ascending: between one point's cost and the next one's, the
  // dominated height is the best value among the points seen so far.
  std::sort(points.begin(), points.end(), [](const Point& a, const Point& b) {
    if (a.cost != b.cost) return a.cost < b.cost;
    return a.value > b.value;
  });
  double area = 0, best = reference.value;
  for (size_t i = 0; i < points.size(); ++i) {
    best = std::max(best, points[i].value);
    const double next_cost = i + 1 < points.size() ? points[i + 1].cost : reference.cost;
    area += (next_cost - points[i].cost) * (best - reference.value);
  }
  return area;
}

}  // namespace minas::pareto
