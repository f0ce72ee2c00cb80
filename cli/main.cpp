// minas: neural architecture search with minute-level training.
#include <cstdio>
#include <exception>
#include <string>

#include "cli/command_line.h"
#include "cli/commands.h"
#include "searchspace/error.h"

namespace {

// The longest line of an error message; a longer one is cut (the places that
// quote values already keep them short: this is the last guard).
constexpr size_t kMaxErrorLine = 1000;

// An error message as it may reach a terminal or a log: no file's, flag's or
// peer's bytes land raw or whole.
std::string printable_message(const std::string& msg) {
  return minas::cli::printable_text(msg, kMaxErrorLine);
}

void print_error(const char* what) {
  std::fprintf(stderr, "minas: error: %s\n", printable_message(what).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"minas: neural architecture search with minute-level training"};
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "minas: error: " + printable_message(e.what()) +
           "\nRun with --help for more information.\n";
  });
  app.require_subcommand(1);
  app.set_version_flag("--version", "minas 0.1.0");
  minas::cli::add_space_commands(app);
  minas::cli::add_train_commands(app);
  minas::cli::add_query_commands(app);
  minas::cli::add_keygen_command(app);
  minas::cli::add_search_commands(app);
  minas::cli::add_predict_command(app);
  minas::cli::add_adapt_command(app);
  minas::cli::add_dashboard_command(app);
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (bench/README.md)");
  bench->require_subcommand(1);
  minas::cli::add_train_benchmarks(*bench);
  minas::cli::add_store_benchmarks(*bench);
  minas::cli::add_dispatch_benchmark(*bench);
  minas::cli::add_strategy_benchmark(*bench);
  minas::cli::add_predictor_benchmark(*bench);
  minas::cli::add_table_benchmark(*bench);
  minas::cli::add_evaluator_benchmark(*bench);
  minas::cli::add_inherit_benchmark(*bench);
  minas::cli::add_adapt_benchmark(*bench);
  minas::cli::add_dashboard_benchmark(*bench);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {  // minas::Error and any other
    print_error(e.what());
    return 1;
  }
  return 0;
}
