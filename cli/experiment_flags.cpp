#include "cli/experiment_flags.h"

#include <type_traits>

#include "cli/flag_ranges.h"

namespace minas::cli {

CLI::Option* add_setting(CLI::App* app, pipeline::ExperimentSettings& settings,
                         std::string_view name, SettingText own) {
  const pipeline::ExperimentParam& p = pipeline::experiment_param(name);
  std::string flag = "--" + std::string(p.name);
  for (char& c : flag)
    if (c == '_') c = '-';
  const std::string_view description = own.description.empty() ? p.description : own.description;
  const std::string_view def = own.default_text.empty() ? p.default_text : own.default_text;
  return std::visit(
      [&](auto field) {
        auto& value = field(settings);
        using T = std::remove_reference_t<decltype(value)>;
        // A yes-or-no setting is a flag; an experiment file's true or false sets it.
        if constexpr (std::is_same_v<T, bool>) {
          return app->add_flag(flag, value, std::string(description));
        } else {
          CLI::Option* o = app->add_option(flag, value, std::string(description));
          if (!def.empty()) o->default_val(std::string(def));
          if constexpr (std::is_same_v<T, uint64_t>)
            o->check(any_of_type<uint64_t>());
          else if constexpr (std::is_arithmetic_v<T>)
            o->check(in_range<T>(static_cast<T>(p.min), static_cast<T>(p.max)));
          return o;
        }
      },
      p.field);
}

}  // namespace minas::cli
