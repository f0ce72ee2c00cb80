#pragma once
// The error a user can cause (a bad space, key, data file, recipe, message):
// it says where (file, then a JSON pointer, field or line) and what is wrong.
// Libraries throw it; process boundaries catch it, report it and exit non-zero.
#include <stdexcept>
#include <string>

namespace minas {

class Error : public std::runtime_error {
 public:
  Error(std::string where, std::string what)
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
