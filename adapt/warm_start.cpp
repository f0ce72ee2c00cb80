#include "adapt/warm_start.h"

#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "db/queries.h"
#include "searchspace/error.h"

namespace minas::adapt {

WarmStart choose_warm_start(db::Store& store, const Fingerprint& fingerprint,
                            const std::string& experiment,
                            const std::vector<std::string>& portfolio,
                            const WarmStartSettings& settings) {
  struct Match {
    double similarity;
    int64_t report;
    std::string experiment;
  };
  std::vector<Match> matches;
  for (const db::DataReport& r : store.data_reports()) {
    if (!r.usable || r.experiment == experiment) continue;
    Fingerprint other;
    try {
      other = Fingerprint::from_json(r.fingerprint);
    } catch (const Error&) {
      continue;  // a report of another version: not comparable
    }
    const double s = similarity(fingerprint, other);
    if (s >= settings.min_similarity) matches.push_back({s, r.id, r.experiment});
  }
  std::sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
    return a.similarity != b.similarity ? a.similarity > b.similarity : a.report > b.report;
  });

  WarmStart w;
  std::set<std::string> used_experiments, asked;
  auto add = [&](const std::string& key) {
    if (asked.insert(key).second) w.initial.push_back(key);
  };
  for (const Match& m : matches) {
    if (static_cast<int>(w.sources.size()) >= settings.sources) break;
    if (!used_experiments.insert(m.experiment).second) continue;
    const auto e = store.find_experiment(m.experiment);
    if (!e) continue;  // its data stopped it before it existed
    WarmStartSource src{m.experiment, m.similarity, {}};
    for (const db::TrialRow& t :
         db::top_k(store.connection(), e->id, db::Metric::val_acc, settings.per_source))
      src.archs.push_back(t.arch_key);
    if (src.archs.empty()) continue;
    for (const std::string& a : src.archs) add(a);
    w.sources.push_back(std::move(src));
  }
  for (const std::string& a : portfolio) add(a);
  return w;
}

}  // namespace minas::adapt
