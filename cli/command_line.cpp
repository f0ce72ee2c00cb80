#include "cli/command_line.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>

#include "searchspace/error.h"
#include "searchspace/json_read.h"

namespace minas::cli {

double parse_duration(const std::string& text, const std::string& flag) {
  double total = 0;
  size_t at = 0;
  bool any = false;
  while (at < text.size()) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(text.substr(at), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    const std::string where = flag + " " + printable_excerpt(text, 40);
    if (used == 0 || !(v >= 0) || !std::isfinite(v))
      throw Error(where, "a duration is a number with s, m or h: 90s, 45m, 1h30m");
    at += used;
    double unit = 1;
    if (at < text.size()) {
      const char u = text[at];
      if (u == 's' || u == 'm' || u == 'h') {
        unit = u == 'h' ? 3600 : u == 'm' ? 60 : 1;
        ++at;
      } else {
        throw Error(where,
                    "unknown unit '" + printable_excerpt(std::string(1, u)) + "' (s, m or h)");
      }
    }
    total += v * unit;
    any = true;
  }
  // A billion seconds (some 30 years) is beyond any budget, and keeps sums finite.
  if (!any || !(total > 0) || !(total <= 1e9))
    throw Error(flag + " " + printable_excerpt(text, 40),
                "must be a positive duration of at most 1e9 s");
  return total;
}

std::string shell_word(const std::string& w) {
  const bool plain = !w.empty() && std::all_of(w.begin(), w.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./:=,+%@", c);
  });
  if (plain) return w;
  std::string q = "'";
  for (char c : w) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string reproduce_line(const CLI::App& cmd, const std::string& program,
                           const std::vector<std::string>& skip, uint64_t seed,
                           const std::string& budget) {
  std::string line = program;
  bool has_seed = false, has_budget = false;
  for (const CLI::Option* o : cmd.get_options()) {
    const std::string name = o->get_single_name();
    if (o->count() == 0 || name == "help" ||
        std::find(skip.begin(), skip.end(), name) != skip.end())
      continue;
    has_seed |= name == "seed";
    has_budget |= name == "budget";
    if (o->get_type_size_max() == 0 || o->get_expected_max() == 0) {
      if (o->as<bool>()) line += " --" + name;
      continue;
    }
    for (const std::string& v : o->results()) line += " --" + name + " " + shell_word(v);
  }
  if (!has_seed) line += " --seed " + std::to_string(seed);
  if (!has_budget) line += " --budget " + shell_word(budget);
  return line;
}

}  // namespace minas::cli
