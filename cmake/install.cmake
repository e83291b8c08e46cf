# Install rules: headers, the exported terra::terra target, terraConfig.cmake (+ version file)
# and the FindCBLAS module the config re-runs on the consumer's machine. Nothing installed
# holds a path of the build machine: CBLAS, OpenMP and Threads are found again by the config,
# and terra::cuda is created by the config only when the `cuda` component is requested.
if(NOT TERRA_INSTALL)
  return()
endif()

include(CMakePackageConfigHelpers)

set(TERRA_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/terra"
    CACHE STRING "Where terraConfig.cmake is installed, relative to the prefix")
mark_as_advanced(TERRA_INSTALL_CMAKEDIR)

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/terra"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT terra_development)
install(TARGETS terra EXPORT terraTargets)
install(EXPORT terraTargets
        NAMESPACE terra::
        DESTINATION "${TERRA_INSTALL_CMAKEDIR}"
        COMPONENT terra_development)

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/terraConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/terraConfig.cmake"
  INSTALL_DESTINATION "${TERRA_INSTALL_CMAKEDIR}")
# 0.x: a minor release may break the API, so only the same major.minor is compatible.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/terraConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion)
install(FILES
          "${PROJECT_BINARY_DIR}/terraConfig.cmake"
          "${PROJECT_BINARY_DIR}/terraConfigVersion.cmake"
          "${PROJECT_SOURCE_DIR}/cmake/FindCBLAS.cmake"
          "${PROJECT_SOURCE_DIR}/cmake/FindCuDNN.cmake"
          "${PROJECT_SOURCE_DIR}/cmake/terraCudaDeps.cmake"
        DESTINATION "${TERRA_INSTALL_CMAKEDIR}"
        COMPONENT terra_development)
install(FILES "${PROJECT_SOURCE_DIR}/LICENSE" "${PROJECT_SOURCE_DIR}/README.md"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}"
        COMPONENT terra_development)
