// `minas space ...`: look at, sample, mutate and lower search spaces.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "cli/flag_ranges.h"
#include "searchspace/error.h"
#include "searchspace/space.h"

namespace minas::cli {
namespace {

struct SpaceOptions {
  std::string space = "small";
  std::string arch;
  uint64_t n = 1;
  uint64_t seed = 0;
  uint64_t limit = 0;
};

void print_json(const nlohmann::json& j) {
  std::cout << j.dump(2) << '\n';
}

nlohmann::json info(const Space& s) {
  nlohmann::json ds = nlohmann::json::array();
  for (const auto& d : s.decisions()) ds.push_back({{"name", d.name}, {"options", d.options}});
  nlohmann::json j = {{"name", s.name()},
                      {"ref", s.ref()},
                      {"description", s.description()},
                      {"skeleton", s.skeleton_type()},
                      {"input", s.spec()["input"]},
                      {"classes", s.spec()["classes"]},
                      {"decisions", ds},
                      {"log10_size", s.log10_size()}};
  if (auto n = s.size())
    j["size"] = *n;
  else
    j["size"] = nullptr;
  return j;
}

// The limit on `enumerate` without --limit: beyond it the listing is not
// something a person or a pipe wants, and the mistake is likely.
constexpr uint64_t kEnumerateCap = 10'000'000;

void enumerate(const Space& s, uint64_t limit) {
  const auto size = s.size();
  if (limit == 0 && (!size || *size > kEnumerateCap)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "10^%.1f", s.log10_size());
    throw Error("space '" + s.ref() + "'",
                std::string("has ") + (size ? std::to_string(*size) : buf) +
                    " architectures, more than enumerate lists (" + std::to_string(kEnumerateCap) +
                    "); pass --limit N for the first N");
  }
  std::string out;
  uint64_t count = 0;
  s.enumerate([&](const Arch& a) {
    out += s.key(a);
    out += '\n';
    if (out.size() > (1 << 16)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
    return limit == 0 || ++count < limit;
  });
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void add_space_commands(CLI::App& app) {
  auto opts = std::make_shared<SpaceOptions>();
  CLI::App* space = app.add_subcommand("space", "Look at, sample, mutate and lower search spaces");
  space->require_subcommand(1);
  const std::string space_help =
      "Built-in space name (small, nb201, mobile) or JSON file, with optional overrides "
      "NAME:key=value,... (e.g. nb201:cells=1,channels=8,input=1x28x28)";
  auto add_space = [&](CLI::App* c) {
    c->add_option("--space", opts->space, space_help)->default_val("small");
  };

  CLI::App* c = space->add_subcommand("info", "The space as JSON: name, decisions, size");
  add_space(c);
  c->callback([opts] { print_json(info(Space::load(opts->space))); });

  c = space->add_subcommand("enumerate", "Every architecture's canonical key, one per line");
  add_space(c);
  c->add_option("--limit", opts->limit, "Stop after N keys (0: all)")
      ->check(any_of_type<uint64_t>());
  c->callback([opts] { enumerate(Space::load(opts->space), opts->limit); });

  c = space->add_subcommand("sample", "N uniformly sampled architecture keys");
  add_space(c);
  c->add_option("--n", opts->n, "How many")
      ->default_val(1)
      ->check(in_range<uint64_t>(1, 1'000'000'000));
  c->add_option("--seed", opts->seed, "Random seed (same seed, same keys, on any machine)")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  c->callback([opts] {
    const Space s = Space::load(opts->space);
    Rng rng(opts->seed);
    std::string out;
    for (uint64_t i = 0; i < opts->n; ++i) out += s.key(s.sample(rng)) + '\n';
    std::fwrite(out.data(), 1, out.size(), stdout);
  });

  c = space->add_subcommand("mutate", "The architecture with exactly one decision changed");
  add_space(c);
  c->add_option("--arch", opts->arch, "Canonical key of the architecture")->required();
  c->add_option("--seed", opts->seed, "Random seed")
      ->default_val(0)
      ->check(any_of_type<uint64_t>());
  c->callback([opts] {
    const Space s = Space::load(opts->space);
    Rng rng(opts->seed);
    std::cout << s.key(s.mutate(s.parse_key(opts->arch), rng)) << '\n';
  });

  c = space->add_subcommand("lower",
                            "The architecture's layer graph as JSON, with params and macs");
  add_space(c);
  c->add_option("--arch", opts->arch, "Canonical key of the architecture")->required();
  c->callback([opts] {
    const Space s = Space::load(opts->space);
    print_json(s.lower(s.parse_key(opts->arch)).to_json());
  });

  c = space->add_subcommand("arch", "One architecture: key, hash, choices, equivalence key, size");
  add_space(c);
  c->add_option("--arch", opts->arch, "Canonical key of the architecture")->required();
  c->callback([opts] {
    const Space s = Space::load(opts->space);
    const Arch a = s.parse_key(opts->arch);
    nlohmann::json j = s.arch_to_json(a);
    const LayerGraph g = s.lower(a);
    j["equivalence_key"] = s.equivalence_key(a);
    j["params"] = g.params();
    j["macs"] = g.macs();
    print_json(j);
  });
}

}  // namespace minas::cli
