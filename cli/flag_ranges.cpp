#include "cli/flag_ranges.h"

#include <stdexcept>

#include "cli/command_line.h"
#include "searchspace/error.h"
#include "searchspace/json_excerpt.h"
#include "trainer/recipe.h"

namespace minas::cli {

CLI::Validator recipe_check(const std::string& field) {
  const RecipeParam* p = find_recipe_param(field);
  if (!p || (p->type != ParamType::integer && p->type != ParamType::number))
    throw std::logic_error("recipe_check: '" + field + "' is not a numeric recipe field");
  const bool integer = p->type == ParamType::integer;
  const std::string range = p->range_text();  // "[1, 65536]" or ">= 0"
  const std::string expected = std::string(integer ? "an integer " : "a number ") +
                               (range[0] == '[' || range[0] == '(' ? "in " : "") + range;
  return CLI::Validator(
      [p, integer, expected](std::string& text) -> std::string {
        std::optional<double> v;
        if (integer) {
          if (const auto i = detail::strict_number<int64_t>(text)) v = static_cast<double>(*i);
        } else {
          v = detail::strict_number<double>(text);
        }
        const bool ok = v && (p->min_open ? *v > p->min : *v >= p->min) &&
                        (p->max_open ? *v < p->max : *v <= p->max);
        if (ok) return {};
        return "must be " + expected + ", got '" + printable_excerpt(text, 40) + "'";
      },
      range);
}

CLI::Validator duration_check(const std::string& flag) {
  return CLI::Validator(
      [flag](std::string& text) {
        try {
          parse_duration(text, flag);
          return std::string();
        } catch (const Error& e) {
          return std::string(e.what());
        }
      },
      "a duration up to 1e9 s");
}

void set_from_file(CLI::Option& opt, const nlohmann::json& value, const std::string& where) {
  std::string text;
  if (value.is_string())
    text = value.get<std::string>();
  else if (value.is_boolean())
    text = value.get<bool>() ? "true" : "false";
  else if (value.is_number())
    text = value.dump();
  else
    throw Error(where, "must be a string, number or boolean, got " + json_excerpt(value));
  try {
    opt.add_result(text);
    opt.run_callback();
  } catch (const CLI::Error& e) {
    // CLI11 may quote the whole value; the message keeps an excerpt.
    throw Error(where, printable_excerpt(e.what(), 200));
  }
}

}  // namespace minas::cli
