// The test binaries' main. CTest runs each test case by name
// (--test-case=NAME); a name that matches nothing would otherwise pass with
// no test run (a ';' in a name splits it in two CTest entries, for one).
// A run filtered by name that runs no test case fails here, naming the filter.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstring>
#include <iostream>
#include <string>

namespace {

unsigned g_matched = 0;
bool g_ended = false;

// Only listens for the run's end, to read how many test cases passed the filters.
struct MatchCounter : doctest::IReporter {
  explicit MatchCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats& s) override {
    g_matched = s.numTestCasesPassingFilters;
    g_ended = true;
  }
  void test_case_start(const doctest::TestCaseData&) override {}
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

DOCTEST_REGISTER_LISTENER("match-counter", 1, MatchCounter);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int rc = context.run();
  if (context.shouldExit()) return rc;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    for (const char* flag : {"--test-case=", "-tc=", "--dt-test-case=", "--dt-tc="})
      if (std::strncmp(argv[i], flag, std::strlen(flag)) == 0) filter = argv[i] + std::strlen(flag);
  }
  if (rc == 0 && g_ended && !filter.empty() && g_matched == 0) {
    std::cerr << "no test case matches --test-case=" << filter
              << " (a ';' in a test name splits it in CTest)\n";
    return 1;
  }
  return rc;
}
