#pragma once
// The experiment store's schema: an ordered list of migrations. Migration i
// (from 0) takes a store from version i to version i + 1; a new store runs all
// of them. PRAGMA user_version holds the version, PRAGMA application_id marks
// the file as a minas store. Never edit a released migration: add one.
#include <cstdint>
#include <string_view>
#include <vector>

namespace minas::db {

// 'mnas': the application_id of every minas store.
inline constexpr int32_t kApplicationId = 0x6d6e6173;

struct Migration {
  int to_version;
  std::string_view description;
  std::string_view sql;
};

const std::vector<Migration>& migrations();
inline int current_schema_version() {
  return static_cast<int>(migrations().size());
}

}  // namespace minas::db
