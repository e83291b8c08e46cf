# CTest docs.api_undocumented: runs Doxygen (EXTRACT_ALL = NO, WARN_IF_UNDOCUMENTED = YES) on
# the headers of cmake/terraDocHeaders.cmake and fails on every undocumented public symbol:
# there is no allowlist, every public symbol of those headers carries a /// comment.
# Prints SKIP without doxygen.
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... [-DDOXYGEN=...] -P check_api_docs.cmake
cmake_minimum_required(VERSION 3.25)

if(NOT DOXYGEN)
  find_program(DOXYGEN doxygen)
endif()
if(NOT DOXYGEN)
  message(STATUS "SKIP: doxygen not found (Debian: apt-get install doxygen)")
  return()
endif()

include("${SOURCE_DIR}/cmake/terraDocHeaders.cmake")
set(headers "")
foreach(pattern IN LISTS TERRA_DOC_CHECKED_HEADERS)
  file(GLOB found RELATIVE "${SOURCE_DIR}" "${SOURCE_DIR}/${pattern}")
  list(APPEND headers ${found})  # a header that does not exist yet matches nothing
endforeach()
list(REMOVE_ITEM headers ${TERRA_DOC_EXCLUDED_HEADERS})
list(REMOVE_DUPLICATES headers)
list(SORT headers)
if(NOT headers)
  message(FATAL_ERROR "no header of TERRA_DOC_CHECKED_HEADERS exists")
endif()
message(STATUS "checking ${headers}")

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(TERRA_DOC_VERSION "")
set(TERRA_DOC_OUTPUT "${WORK_DIR}")
set(TERRA_DOC_INPUT "\"${SOURCE_DIR}/docs/api/namespaces.dox\"")
foreach(h IN LISTS headers)
  string(APPEND TERRA_DOC_INPUT " \"${SOURCE_DIR}/${h}\"")
endforeach()
list(JOIN TERRA_DOC_EXCLUDED_SYMBOLS " " TERRA_DOC_EXCLUDE_SYMBOLS)
set(TERRA_DOC_MAINPAGE "")
set(TERRA_DOC_STRIP "${SOURCE_DIR}")
set(TERRA_DOC_EXTRACT_ALL NO)
set(TERRA_DOC_WARNINGS "${WORK_DIR}/warnings.txt")
set(TERRA_DOC_HTML NO)
configure_file("${SOURCE_DIR}/docs/api/Doxyfile.in" "${WORK_DIR}/Doxyfile" @ONLY)
execute_process(COMMAND "${DOXYGEN}" "${WORK_DIR}/Doxyfile" WORKING_DIRECTORY "${SOURCE_DIR}"
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(NOT rc EQUAL 0 OR NOT EXISTS "${WORK_DIR}/warnings.txt")
  message(FATAL_ERROR "doxygen failed (${rc})")
endif()

# "<file>:<line>: warning: <what> is not documented." -> "<file relative>:<line>: <what> ..."
file(STRINGS "${WORK_DIR}/warnings.txt" lines REGEX "warning: .* is not documented")
set(found "")
foreach(l IN LISTS lines)
  string(REPLACE "${SOURCE_DIR}/" "" l "${l}")
  string(REPLACE ": warning: " ": " l "${l}")
  list(APPEND found "${l}")
endforeach()
list(REMOVE_DUPLICATES found)
list(SORT found)

if(found)
  list(LENGTH found n)
  list(JOIN found "\n  " s)
  message(FATAL_ERROR "${n} undocumented public symbols (write a /// comment above each):\n  ${s}")
endif()
message(STATUS "API docs: every public symbol is documented")
