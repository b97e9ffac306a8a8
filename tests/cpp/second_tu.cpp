// A second translation unit including the wrapper: linking it with test_wrapper.cpp checks that
// the header-only wrapper has no ODR violations (everything is inline or a template).
#include "adamw/adamw.hpp"

std::string version_from_second_tu() { return adamw::version(); }
