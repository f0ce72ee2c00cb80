#pragma once
// The range of every numeric flag, checked by one CLI11 validator before a
// command runs. The validator reads the text itself, strictly: CLI11 2.1 alone
// clamps 99999999999999999999 to INT64_MAX, wraps -1 into an unsigned option,
// reads 0x10 as 16, and lets nan and inf through CLI::Range and
// CLI::PositiveNumber. An experiment file's field reaches its option through
// the option itself (set_from_file), so it meets the same check.
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "searchspace/json_read.h"

namespace minas::cli {

namespace detail {

// A decimal number of type T written the whole of `text`; nullopt for anything
// else (a sign on an unsigned, overflow, a fraction for an integer, nan, inf).
template <class T>
std::optional<T> strict_number(const std::string& text) {
  T v{};
  const char* first = text.data();
  const char* last = first + text.size();
  const auto [end, ec] = std::from_chars(first, last, v);
  if (first == last || ec != std::errc() || end != last) return std::nullopt;
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) return std::nullopt;
  }
  return v;
}

template <class T>
std::string bound_text(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    char buf[64];
    // Whole bounds in full (1000000000000000, not 1e+15), others as %g.
    if (std::trunc(v) == v && std::fabs(v) < 1e19)
      std::snprintf(buf, sizeof buf, "%.0f", v);
    else
      std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  } else {
    return std::to_string(v);
  }
}

template <class T>
CLI::Validator ranged(T lo, T hi, bool lo_open) {
  const std::string kind = std::is_floating_point_v<T> ? "a number" : "an integer";
  const std::string range = (lo_open ? "(" : "[") + bound_text(lo) + ", " + bound_text(hi) + "]";
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const std::optional<T> v = strict_number<T>(text);
        if (v && (lo_open ? *v > lo : *v >= lo) && *v <= hi) return {};
        return "must be " + kind + " in " + range + ", got '" + printable_excerpt(text, 40) + "'";
      },
      range);
}

}  // namespace detail

// The value lies in [lo, hi].
template <class T>
CLI::Validator in_range(T lo, T hi) {
  return detail::ranged<T>(lo, hi, false);
}

// The value lies in (lo, hi]: a positive amount is above(0.0, ...).
template <class T>
CLI::Validator above(T lo, T hi) {
  return detail::ranged<T>(lo, hi, true);
}

// Any value of T: only overflow and foreign notations are refused (seeds).
template <class T>
CLI::Validator any_of_type() {
  return in_range<T>(std::numeric_limits<T>::lowest(), std::numeric_limits<T>::max());
}

// A flag that sets the recipe field `field`: the recipe table's type and
// range (trainer/recipe.h), so the flag and a recipe file agree.
CLI::Validator recipe_check(const std::string& field);

// A wall-clock duration (90s, 45m, 1h30m: parse_duration's forms and range).
CLI::Validator duration_check(const std::string& flag);

// Gives `opt` an experiment file's value, as if it were on the command line:
// through the option's own validators and conversion. Throws Error naming
// `where` for a value that is not a string, number or boolean, or that the
// option refuses.
void set_from_file(CLI::Option& opt, const nlohmann::json& value, const std::string& where);

}  // namespace minas::cli
