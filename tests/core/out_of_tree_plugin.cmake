# out_of_tree_plugin.cmake — installs this build into a scratch prefix, builds
# examples/out_of_tree_plugin against it exactly as a third party would, and runs the loader
# test that loads the result (PluginLoaderOutOfTree.*).
file(REMOVE_RECURSE ${WORK_DIR})
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/out_of_tree_plugin -B ${WORK_DIR}/build -G Ninja
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix" -DTorch_DIR=${Torch_DIR})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
if(NOT EXISTS ${WORK_DIR}/build/cddp_minmax8.so)
  message(FATAL_ERROR "out-of-tree build produced no cddp_minmax8.so")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env CDDP_OOT_PLUGIN=${WORK_DIR}/build/cddp_minmax8.so
  ${LOADER_TEST} --gtest_filter=PluginLoaderOutOfTree.* RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(NOT rc EQUAL 0 OR out MATCHES "SKIPPED")
  message(FATAL_ERROR "loading the out-of-tree plugin failed")
endif()
