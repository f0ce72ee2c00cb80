#pragma once
// A JSON value as an error message quotes it: written as JSON, escaped and cut
// to a short excerpt, so that a long, deep or binary value (a file's or a
// peer's) never lands whole or raw in a message or a log line.
#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

#include "searchspace/json_read.h"

namespace minas {

// At most `max_chars` characters of `v` written as JSON in ASCII (control and
// non-ASCII characters as \uXXXX), and "..." where cut. It writes no more of
// `v` than it shows, so a 60 MB string or a value nested 100,000 deep costs no
// more than a short one; invalid UTF-8 in a string (one built from
// command-line text) is written as \ufffd, not thrown as nlohmann's dump()
// would.
std::string json_excerpt(const nlohmann::json& v, size_t max_chars = kExcerptChars);

}  // namespace minas
