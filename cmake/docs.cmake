# API reference: `cmake --build <dir> --target terra_docs` writes HTML to <dir>/docs/api/html.
# Optional: without doxygen (Debian: doxygen) the target is not defined and nothing breaks.
find_package(Doxygen QUIET)
if(NOT DOXYGEN_FOUND)
  message(STATUS "terra: doxygen not found, no terra_docs target")
  return()
endif()
include("${PROJECT_SOURCE_DIR}/cmake/terraDocHeaders.cmake")
set(TERRA_DOC_VERSION "${PROJECT_VERSION}")
set(TERRA_DOC_OUTPUT "${PROJECT_BINARY_DIR}/docs/api")
set(TERRA_DOC_INPUT "\"${PROJECT_SOURCE_DIR}/README.md\" \"${PROJECT_SOURCE_DIR}/docs/api/namespaces.dox\" \"${PROJECT_SOURCE_DIR}/include/terra\"")
list(JOIN TERRA_DOC_EXCLUDED_SYMBOLS " " TERRA_DOC_EXCLUDE_SYMBOLS)
set(TERRA_DOC_MAINPAGE "${PROJECT_SOURCE_DIR}/README.md")
set(TERRA_DOC_STRIP "${PROJECT_SOURCE_DIR}")
set(TERRA_DOC_EXTRACT_ALL YES)  # the reference lists everything; the check uses NO
set(TERRA_DOC_WARNINGS "${PROJECT_BINARY_DIR}/docs/api/warnings.txt")
set(TERRA_DOC_HTML YES)
configure_file("${PROJECT_SOURCE_DIR}/docs/api/Doxyfile.in" "${PROJECT_BINARY_DIR}/docs/api/Doxyfile" @ONLY)
add_custom_target(terra_docs
  COMMAND Doxygen::doxygen "${PROJECT_BINARY_DIR}/docs/api/Doxyfile"
  COMMAND ${CMAKE_COMMAND} -E echo "API reference: ${PROJECT_BINARY_DIR}/docs/api/html/index.html"
  WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
  COMMENT "Doxygen: terra API reference"
  VERBATIM)
