# CddpInstall.cmake — installs headers, libraries, plugins and the CMake package, so that a
# third party's plugin is just find_package(cddp CONFIG) + cddp_add_compressor_plugin().
include(CMakePackageConfigHelpers)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/core/include/cddp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS cddp_compressor cddp_core cddp_torch EXPORT cddpTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT cddpTargets NAMESPACE cddp:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cddp)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/cddpConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cddpConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cddp)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cddpConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cddpConfig.cmake ${PROJECT_BINARY_DIR}/cddpConfigVersion.cmake
  ${PROJECT_SOURCE_DIR}/cmake/CddpPlugin.cmake ${PROJECT_SOURCE_DIR}/cmake/CddpTorch.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cddp)
