# vcpkg port of terra, a header-only library: one release configuration, the CMake package moved
# to share/terra, the license installed as copyright.
#
# This is an overlay port that lives in terra's repository and builds the checkout it sits in
# (vcpkg install terra --overlay-ports=<terra>/ports). For a registry, replace the next line by
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/terra REF "v${VERSION}"
#                     SHA512 <sha512 of the release archive> HEAD_REF main)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

set(VCPKG_BUILD_TYPE release)  # header-only: nothing differs between debug and release

vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    openblas TERRA_USE_CBLAS
)

# oneDNN (TERRA_USE_DNNL) stays off: the package must not depend on what happens to be installed.
# The cuda and cudnn features only bring their vcpkg dependencies: the installed package
# creates terra::cuda itself when a consumer asks for the component, so nothing is configured
# for CUDA here.
vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DTERRA_BUILD_TESTS=OFF
    -DTERRA_BUILD_EXAMPLES=OFF
    -DTERRA_BUILD_BENCH=OFF
    -DTERRA_INSTALL=ON
    -DTERRA_WITH_CUDA=OFF
    -DTERRA_USE_DNNL=OFF
    -DTERRA_INSTALL_CMAKEDIR=share/terra
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME terra CONFIG_PATH share/terra)

# Header-only: no lib/; README/LICENSE land in share/doc, which vcpkg does not use.
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/share/doc")

vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
