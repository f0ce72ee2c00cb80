#pragma once
// The warm start of minas adapt: the architectures a search asks first, before anything is
// sampled (StrategySettings::initial). First the best architectures found on the data sets of
// the store most similar to this one (adapt::similarity of their fingerprints, from the store's
// data_reports), then a small fixed portfolio of architectures known to be good.
#include <string>
#include <vector>

#include "adapt/validate.h"
#include "db/store.h"

namespace minas::adapt {

struct WarmStartSettings {
  double min_similarity = 0.6;  // data sets less similar than this are not used
  int sources = 3;              // the most similar data sets used, at most
  int per_source = 3;           // the best architectures (by validation accuracy) taken from each
};

struct WarmStartSource {
  std::string experiment;  // whose data report matched
  double similarity = 0;
  std::vector<std::string> archs;  // its best, best first
};

struct WarmStart {
  std::vector<std::string> initial;      // the order the search asks them in; no repeats
  std::vector<WarmStartSource> sources;  // most similar first
};

// Looks through the store's usable data reports other than `experiment`'s own, keeps those of
// experiments that finished trials and whose fingerprint is at least min_similarity like
// `fingerprint`, takes the most similar (ties: the newer report) up to `sources` experiments,
// and from each its `per_source` best architectures by validation accuracy; then `portfolio`.
WarmStart choose_warm_start(db::Store& store, const Fingerprint& fingerprint,
                            const std::string& experiment,
                            const std::vector<std::string>& portfolio,
                            const WarmStartSettings& settings = {});

}  // namespace minas::adapt
