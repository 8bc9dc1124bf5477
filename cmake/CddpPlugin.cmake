# CddpPlugin.cmake — cddp_add_compressor_plugin(NAME SOURCES ...): builds cddp_<NAME>.so, a
# compressor plugin, with hidden visibility so that only the ABI entry point is exported.
# Used in-tree and, through the installed package, by out-of-tree plugins.
function(cddp_add_compressor_plugin name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBRARIES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "cddp_add_compressor_plugin(${name}): SOURCES is required")
  endif()
  set(target cddp_plugin_${name})
  add_library(${target} MODULE ${ARG_SOURCES})
  set_target_properties(${target} PROPERTIES
    OUTPUT_NAME "cddp_${name}" PREFIX "" SUFFIX ".so"
    CXX_VISIBILITY_PRESET hidden VISIBILITY_INLINES_HIDDEN ON)
  if(TARGET cddp::compressor)
    target_link_libraries(${target} PRIVATE cddp::compressor ${ARG_LIBRARIES})
  else()
    target_link_libraries(${target} PRIVATE cddp_compressor ${ARG_LIBRARIES})
  endif()
  if(DEFINED CDDP_PLUGIN_OUTPUT_DIR)
    set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${CDDP_PLUGIN_OUTPUT_DIR}")
  endif()
  set(CDDP_LAST_PLUGIN_TARGET ${target} PARENT_SCOPE)
endfunction()
