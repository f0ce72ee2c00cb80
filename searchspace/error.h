#pragma once
// The error a user can cause with a space, an architecture or a key: it says
// where (file, then a JSON pointer or field) and what is wrong.
#include <stdexcept>
#include <string>

namespace minas {

class SpecError : public std::runtime_error {
 public:
  SpecError(std::string where, std::string what)
      : std::runtime_error(where.empty() ? what : where + ": " + what),
        where_(std::move(where)),
        what_(std::move(what)) {}
  const std::string& where() const { return where_; }
  const std::string& reason() const { return what_; }

 private:
  std::string where_;
  std::string what_;
};

}  // namespace minas
