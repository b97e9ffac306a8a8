# CMake package for libadamw: find_package(adamw CONFIG) gives the imported target adamw::adamw
# (the shared library, or the static one when ADAMW_USE_STATIC_LIBS is ON), plus adamw::shared
# and adamw::static. Both carry the include directory (adamw.h and adamw/adamw.hpp).
include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_adamw_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)

if(NOT TARGET adamw::shared)
  add_library(adamw::shared SHARED IMPORTED)
  set_target_properties(adamw::shared PROPERTIES
    IMPORTED_LOCATION "${_adamw_prefix}/lib/libadamw.so.@VERSION@"
    IMPORTED_SONAME "libadamw.so.@ABI@"
    INTERFACE_INCLUDE_DIRECTORIES "${_adamw_prefix}/include")
endif()

if(NOT TARGET adamw::static)
  add_library(adamw::static STATIC IMPORTED)
  set_target_properties(adamw::static PROPERTIES
    IMPORTED_LOCATION "${_adamw_prefix}/lib/libadamw.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_adamw_prefix}/include"
    INTERFACE_LINK_LIBRARIES "m;dl;Threads::Threads")
endif()

if(NOT TARGET adamw::adamw)
  add_library(adamw::adamw INTERFACE IMPORTED)
  if(ADAMW_USE_STATIC_LIBS)
    set_property(TARGET adamw::adamw PROPERTY INTERFACE_LINK_LIBRARIES adamw::static)
  else()
    set_property(TARGET adamw::adamw PROPERTY INTERFACE_LINK_LIBRARIES adamw::shared)
  endif()
endif()

set(adamw_VERSION "@VERSION@")
unset(_adamw_prefix)
