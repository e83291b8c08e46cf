# CTest docs.api_undocumented: runs Doxygen (EXTRACT_ALL = NO, WARN_IF_UNDOCUMENTED = YES) on
# the headers of cmake/terraDocHeaders.cmake and fails on every undocumented public symbol that
# is not in docs/api/undocumented.txt, the shrinking list of symbols that were undocumented
# when the check was introduced (document one: remove its line). Prints SKIP without doxygen.
#   cmake -DSOURCE_DIR=... -DWORK_DIR=... [-DDOXYGEN=...] [-DUPDATE_BASELINE=ON] -P check_api_docs.cmake
# UPDATE_BASELINE=ON rewrites docs/api/undocumented.txt from the current warnings.
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

# "<file>:<line>: warning: <what> is not documented." -> "<file relative>: <what> ..."
file(STRINGS "${WORK_DIR}/warnings.txt" lines REGEX "warning: .* is not documented")
set(found "")
foreach(l IN LISTS lines)
  string(REPLACE "${SOURCE_DIR}/" "" l "${l}")
  string(REGEX REPLACE ":[0-9]+: warning: " ": " l "${l}")
  list(APPEND found "${l}")
endforeach()
list(REMOVE_DUPLICATES found)
list(SORT found)

set(baseline_file "${SOURCE_DIR}/docs/api/undocumented.txt")
if(UPDATE_BASELINE)
  list(JOIN found "\n" text)
  file(WRITE "${baseline_file}" "# Public symbols that were undocumented when the API-doc check was introduced.
# tests/docs/check_api_docs.cmake fails on any undocumented symbol not listed here. Document a
# symbol (a /// comment) and delete its line; never add lines by hand.
${text}
")
  list(LENGTH found n)
  message(STATUS "wrote ${n} entries to ${baseline_file}")
  return()
endif()

set(baseline "")
if(EXISTS "${baseline_file}")
  file(STRINGS "${baseline_file}" baseline REGEX "^[^#]")
endif()
set(new "${found}")
if(baseline)
  list(REMOVE_ITEM new ${baseline})
endif()
set(stale "${baseline}")
if(found)
  list(REMOVE_ITEM stale ${found})
endif()
list(LENGTH found n_found)
list(LENGTH baseline n_base)
if(stale)
  list(JOIN stale "\n  " s)
  message(STATUS "documented now, delete these lines from docs/api/undocumented.txt:\n  ${s}")
endif()
if(new)
  list(JOIN new "\n  " s)
  message(FATAL_ERROR "undocumented public symbols (write a /// comment above each):\n  ${s}")
endif()
message(STATUS "API docs: no new undocumented symbol (${n_found} left in the baseline of ${n_base})")
