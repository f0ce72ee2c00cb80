#pragma once
// The options of the experiment settings (pipeline/experiment.h's table) on
// a command: each bound to its field of ExperimentSettings, with the table's
// default, range and help, so `minas controller` and `minas search` fill an
// experiment the same way from flags and from experiment files.
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

#include "pipeline/experiment.h"

namespace minas::cli {

// What a command says differently from the table (`minas search` searches
// longer with fewer epochs per trial); empty: the table's.
struct SettingText {
  std::string_view default_text;
  std::string_view description;
};

// Adds --NAME for the setting `name`, bound to its field in `settings`
// (which must outlive the app).
CLI::Option* add_setting(CLI::App* app, pipeline::ExperimentSettings& settings,
                         std::string_view name, SettingText own = {});

}  // namespace minas::cli
