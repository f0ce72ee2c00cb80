// Space operations on the built-in spaces: sizes, sampling, mutation,
// crossover, enumeration, neighbours, encoding, keys, hashes, overrides.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <set>

#include "searchspace/error.h"
#include "searchspace/space.h"

using minas::Arch;
using minas::Rng;
using minas::Space;

namespace {

// Mixed-radix index of an arch: a bijection onto [0, size).
uint64_t index_of(const Space& s, const Arch& a) {
  uint64_t i = 0;
  for (size_t d = 0; d < a.choice.size(); ++d)
    i = i * s.decisions()[d].options.size() + a.choice[d];
  return i;
}

size_t differing(const Arch& a, const Arch& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.choice.size(); ++i) n += a.choice[i] != b.choice[i];
  return n;
}

}  // namespace

TEST_CASE("space: built-in spaces load, by name, with their sizes") {
  const auto names = Space::builtin_names();
  CHECK(std::set<std::string>(names.begin(), names.end()) ==
        std::set<std::string>{"mobile", "nb201", "small"});
  CHECK(Space::load("nb201").size() == 15625u);
  CHECK(Space::load("small").size() == 47628u);
  const Space m = Space::load("mobile");
  // 5 stage widths (2*2*3*3*3), 5 first layers (18 options), 8 others (19 options).
  const double expect = std::log10(108.0) + 5 * std::log10(18.0) + 8 * std::log10(19.0);
  CHECK(m.log10_size() == doctest::Approx(expect));
  CHECK(m.skeleton_type() == "chain");
  CHECK(Space::load("nb201").skeleton_type() == "cell");
}

TEST_CASE("space: sampling is uniform over the whole space (chi-square)") {
  // Every nb201 cell drawn 20 times on average: the statistic of 15,624
  // degrees of freedom has mean 15,624 and sd sqrt(2 * 15,624) = 176.8.
  const Space s = Space::load("nb201");
  const uint64_t cells = *s.size(), per = 20, n = cells * per;
  std::vector<uint32_t> counts(cells, 0);
  Rng rng(7);
  for (uint64_t i = 0; i < n; ++i) ++counts[index_of(s, s.sample(rng))];
  double chi2 = 0;
  for (uint32_t c : counts) chi2 += (c - double(per)) * (c - double(per)) / per;
  const double dof = cells - 1.0, sd = std::sqrt(2 * dof);
  INFO("chi2 = " << chi2);
  CHECK(std::abs(chi2 - dof) < 5 * sd);

  // A biased sampler is caught: the same statistic when one option is drawn
  // 10% more often than its share lands far outside the band.
  std::vector<uint32_t> biased(cells, 0);
  Rng rng2(7);
  for (uint64_t i = 0; i < n; ++i) {
    Arch a = s.sample(rng2);
    if (a.choice[0] == 1 && rng2.uniform() < 0.1) a.choice[0] = 0;
    ++biased[index_of(s, a)];
  }
  double chi2b = 0;
  for (uint32_t c : biased) chi2b += (c - double(per)) * (c - double(per)) / per;
  CHECK(std::abs(chi2b - dof) > 5 * sd);
}

TEST_CASE("space: per-decision marginals of a huge space are uniform") {
  const Space s = Space::load("mobile");
  Rng rng(11);
  const int n = 38000;
  std::vector<std::vector<int>> counts;
  for (const auto& d : s.decisions()) counts.emplace_back(d.options.size(), 0);
  for (int i = 0; i < n; ++i) {
    const Arch a = s.sample(rng);
    for (size_t d = 0; d < a.choice.size(); ++d) ++counts[d][a.choice[d]];
  }
  for (size_t d = 0; d < counts.size(); ++d) {
    const double k = counts[d].size(), e = n / k;
    double chi2 = 0;
    for (int c : counts[d]) chi2 += (c - e) * (c - e) / e;
    INFO(s.decisions()[d].name << " chi2 = " << chi2);
    CHECK(chi2 < (k - 1) + 6 * std::sqrt(2 * (k - 1)));
  }
}

TEST_CASE("space: mutate changes exactly one decision to another option, and stays valid") {
  for (const char* name : {"nb201", "small", "mobile"}) {
    const Space s = Space::load(name);
    Rng rng(3);
    std::set<size_t> touched;
    Arch a = s.sample(rng);
    for (int i = 0; i < 2000; ++i) {
      minas::Mutation m;
      const Arch b = s.mutate(a, rng, &m);
      REQUIRE(differing(a, b) == 1);
      CHECK(b.choice[m.decision] == m.to);
      CHECK(a.choice[m.decision] == m.from);
      CHECK(m.from != m.to);
      touched.insert(m.decision);
      CHECK(s.parse_key(s.key(b)) == b);
      a = b;
    }
    CHECK(touched.size() == s.decisions().size());
    s.lower(a);
  }
}

TEST_CASE("space: crossover takes every decision from one of the parents") {
  const Space s = Space::load("mobile");
  Rng rng(5);
  const Arch a = s.sample(rng), b = s.sample(rng);
  int from_a = 0, from_b = 0;
  for (int t = 0; t < 200; ++t) {
    const Arch c = s.crossover(a, b, rng);
    for (size_t i = 0; i < c.choice.size(); ++i) {
      REQUIRE((c.choice[i] == a.choice[i] || c.choice[i] == b.choice[i]));
      if (a.choice[i] != b.choice[i]) (c.choice[i] == a.choice[i] ? from_a : from_b)++;
    }
  }
  CHECK(from_a > 0);
  CHECK(from_b > 0);
}

TEST_CASE("space: enumerate visits every architecture once, neighbours and one-hot") {
  const Space s = Space::load("small");
  std::set<std::string> keys;
  uint64_t n = 0;
  s.enumerate([&](const Arch& a) {
    keys.insert(s.key(a));
    ++n;
    return true;
  });
  CHECK(n == *s.size());
  CHECK(keys.size() == n);

  uint64_t stopped = 0;
  s.enumerate([&](const Arch&) { return ++stopped < 10; });
  CHECK(stopped == 10);

  Rng rng(1);
  const Arch a = s.sample(rng);
  const auto nb = s.neighbours(a);
  size_t expect = 0;
  for (const auto& d : s.decisions()) expect += d.options.size() - 1;
  CHECK(nb.size() == expect);
  for (const Arch& b : nb) CHECK(differing(a, b) == 1);

  const auto v = s.one_hot(a);
  CHECK(v.size() == s.one_hot_size());
  float sum = 0;
  for (float x : v) sum += x;
  CHECK(sum == doctest::Approx(double(s.decisions().size())));
}

TEST_CASE("space: keys round trip and hashes are stable across machines and runs") {
  // FNV-1a 64 test vectors from its specification.
  CHECK(minas::fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(minas::fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(minas::fnv1a64("foobar") == 0x85944171f73967e8ULL);

  const Space s = Space::load("nb201");
  const std::string k =
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_"
      "3x3~2|";
  CHECK(s.key(s.parse_key(k)) == k);
  CHECK(s.hash(s.parse_key(k)) == minas::fnv1a64(k));
  CHECK(s.hash(s.parse_key(k)) == 0x26dd2ddabee989cbULL);

  // The same seed gives the same architectures everywhere (the generator and
  // the bounded draw are our own, not the standard library's).
  Rng rng(1);
  CHECK(s.key(s.sample(rng)) ==
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|none~2|");
  CHECK(s.key(s.sample(rng)) ==
        "|none~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|avg_pool_3x3~1|avg_pool_3x3~2|");

  for (const char* name : {"small", "mobile"}) {
    const Space c = Space::load(name);
    Rng r(9);
    for (int i = 0; i < 100; ++i) {
      const Arch a = c.sample(r);
      CHECK(c.parse_key(c.key(a)) == a);
      CHECK(c.arch_from_json(c.arch_to_json(a)) == a);
    }
  }
}

TEST_CASE("space: arch JSON round trip and its errors") {
  const Space s = Space::load("small");
  const Arch a = s.parse_key("16|32|conv_k3|skip|64|conv_k3|skip");
  nlohmann::json j = s.arch_to_json(a);
  CHECK(j["choices"]["stage1.layer2"] == "skip");
  CHECK(j["choices"]["stem.width"] == 16);
  CHECK(s.arch_from_json(j) == a);
  nlohmann::json only_choices = {{"choices", j["choices"]}};
  CHECK(s.arch_from_json(only_choices) == a);

  nlohmann::json other = j;
  other["space"] = "nb201";
  CHECK_THROWS_WITH_AS(s.arch_from_json(other), doctest::Contains("not 'small'"), minas::Error);
  nlohmann::json disagree = j;
  disagree["choices"]["stem.width"] = 24;
  CHECK_THROWS_WITH_AS(s.arch_from_json(disagree), doctest::Contains("different"), minas::Error);
  nlohmann::json bad_value = only_choices;
  bad_value["choices"]["stem.width"] = 17;
  CHECK_THROWS_WITH_AS(s.arch_from_json(bad_value), doctest::Contains("/choices/stem.width"),
                       minas::Error);
  nlohmann::json bad_hash = j;
  bad_hash["hash"] = "0000000000000000";
  CHECK_THROWS_AS(s.arch_from_json(bad_hash), minas::Error);
  CHECK_THROWS_AS(s.check(Arch{{0, 0, 0}}), minas::Error);
  CHECK_THROWS_AS(s.check(Arch{{0, 0, 9, 0, 0, 0, 0}}), minas::Error);
}

TEST_CASE("space: keys of another space or out of range are refused, naming the field") {
  const Space nb = Space::load("nb201");
  const Space small = Space::load("small");
  CHECK_THROWS_WITH_AS(nb.parse_key("16|32|conv_k3|skip|64|conv_k3|skip"),
                       doctest::Contains("'+'-separated"), minas::Error);
  CHECK_THROWS_WITH_AS(
      small.parse_key("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|"
                      "nor_conv_3x3~1|skip_connect~2|"),
      doctest::Contains("has 10 '|'-separated field(s), the space has 7"), minas::Error);
  CHECK_THROWS_WITH_AS(small.parse_key("16|32|conv_k7|skip|64|conv_k3|skip"),
                       doctest::Contains("'conv_k7' is not an option of decision 'stage1.layer1'"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(small.parse_key("16|32|skip|skip|64|conv_k3|skip"),
                       doctest::Contains("field 3"), minas::Error);
  CHECK_THROWS_WITH_AS(
      nb.parse_key("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|"
                   "nor_conv_5x5~1|skip_connect~2|"),
      doctest::Contains("edge 3<-1: 'nor_conv_5x5' is not an option"), minas::Error);
  CHECK_THROWS_WITH_AS(
      nb.parse_key("|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~0|+|skip_connect~0|"
                   "nor_conv_3x3~1|skip_connect~2|"),
      doctest::Contains("must end in '~0'"), minas::Error);
  CHECK_THROWS_AS(nb.parse_key(""), minas::Error);
}

TEST_CASE("space: overrides set the skeleton, the input and the classes") {
  const Space full = Space::load("nb201");
  const Space tiny = Space::load("nb201:cells=1,channels=8,input=1x28x28,classes=5");
  CHECK(tiny.ref() == "nb201:cells=1,channels=8,input=1x28x28,classes=5");
  const Arch a = full.parse_key(
      "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_"
      "connect~2|");
  const auto g = tiny.lower(a);
  CHECK(g.input_shape() == minas::Shape{1, 28, 28});
  CHECK(g.classes() == 5);
  CHECK(g.params() < full.lower(a).params() / 10);
  CHECK(tiny.key(a) == full.key(a));

  const Space m = Space::load("mobile:input=3x32x32,stem.channels=24,head.dropout=0");
  Rng rng(1);
  CHECK(m.lower(m.sample(rng)).input_shape() == minas::Shape{3, 32, 32});

  CHECK_THROWS_WITH_AS(Space::load("nb201:cellz=2"), doctest::Contains("override 'cellz'"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nb201:type=chain"), doctest::Contains("override 'type'"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nb201:cells"), doctest::Contains("not key=value"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nb201:input=28x28"), doctest::Contains("CxHxW"), minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nb201:cells=0"), doctest::Contains("/skeleton/cells"),
                       minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nb201:input=1x30x30"),
                       doctest::Contains("cannot be built for input 1x30x30"), minas::Error);
  CHECK_THROWS_WITH_AS(Space::load("nope"), doctest::Contains("built-in: mobile, nb201, small"),
                       minas::Error);
}

TEST_CASE("space: chain equivalence ignores where a stage's skips are") {
  const Space s = Space::load("mobile");
  Rng rng(2);
  Arch a = s.sample(rng);
  // stage2 has three layers (decisions 4, 5, 6 after its width at 3):
  // [mb, mb, skip] and [mb, skip, mb] are one network.
  const auto& d = s.decisions();
  REQUIRE(d[4].name == "stage2.layer1");
  REQUIRE(d[5].name == "stage2.layer2");
  REQUIRE(d[6].name == "stage2.layer3");
  const uint32_t skip = 0, some = 4;
  REQUIRE(d[5].label(skip) == "skip");
  Arch b = a, c = a;
  b.choice[5] = some;
  b.choice[6] = skip;
  c.choice[5] = skip;
  c.choice[6] = some;
  CHECK(s.key(b) != s.key(c));
  CHECK(s.equivalence_key(b) == s.equivalence_key(c));
  CHECK(s.lower(b).params() == s.lower(c).params());
  Arch e = b;
  e.choice[6] = some;
  CHECK(s.equivalence_key(e) != s.equivalence_key(b));
}
