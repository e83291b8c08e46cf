# One step of the install test, run as
#   cmake -DSTEP=<step> -DBUILD_DIR=... -DSOURCE_DIR=... -DCONSUMER_DIR=... -DWORK_DIR=...
#         -DGENERATOR=... -DCXX_COMPILER=... -DTERRA_VERSION=... [-DCONFIG=...] -P install_test.cmake
# Steps:
#   install                cmake --install BUILD_DIR into WORK_DIR/prefix; check that no
#                          installed CMake file names the source or build tree, that the
#                          generated ones hold no absolute path at all, that the exported
#                          targets are all terra::, and the version file's version
#   relocated              copy the installed prefix elsewhere: the cpu consumer configures
#                          against the copy (the package is relocatable)
#   cpu                    consumer with find_package(terra): configure (asserts CUDA is never
#                          looked up), build, run
#   cuda_optional          OPTIONAL_COMPONENTS cuda with CUDA hidden: configure must succeed
#   cuda_required_missing  COMPONENTS cuda with CUDA hidden: terra_FOUND is false, and with
#                          REQUIRED the configure fails with a clear message; the same for
#                          REQUIRED COMPONENTS cudnn with cuDNN hidden
#   subdir                 a consumer that uses add_subdirectory(terra) instead: configure
#   cuda                   REQUIRED COMPONENTS cuda with the toolkit present: build a C++ unit
#                          and a .cu unit (nvcc, includes terra.hpp) that use terra::cuda
cmake_minimum_required(VERSION 3.25)

set(prefix "${WORK_DIR}/prefix")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc COMMAND_ECHO STDOUT)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}")
  endif()
endfunction()

# Configure the consumer in WORK_DIR/<name> with MODE=<mode>; extra args follow.
function(configure_consumer name mode)
  file(REMOVE_RECURSE "${WORK_DIR}/${name}")
  set(cmd ${CMAKE_COMMAND} -S "${CONSUMER_DIR}" -B "${WORK_DIR}/${name}" -G "${GENERATOR}"
      "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_PREFIX_PATH=${prefix}"
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF "-DEXPECTED_PREFIX=${prefix}"
      "-DEXPECTED_VERSION=${TERRA_VERSION}" "-DMODE=${mode}" ${ARGN})
  set(cmd ${cmd} PARENT_SCOPE)
endfunction()

if(STEP STREQUAL "install")
  file(REMOVE_RECURSE "${prefix}")
  set(config_args "")
  if(CONFIG)
    set(config_args --config "${CONFIG}")
  endif()
  run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}" ${config_args})
  file(GLOB_RECURSE configs "${prefix}/*/terraConfig.cmake")
  list(LENGTH configs n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "expected one installed terraConfig.cmake, found: ${configs}")
  endif()
  foreach(f terra/terra.hpp terra/ops/ops.def terra/io/print.hpp)
    if(NOT EXISTS "${prefix}/include/${f}")
      message(FATAL_ERROR "header not installed: include/${f}")
    endif()
  endforeach()
  get_filename_component(cmake_dir "${configs}" DIRECTORY)
  file(GLOB installed_cmake "${cmake_dir}/*.cmake")
  foreach(f IN LISTS installed_cmake)
    file(READ "${f}" text)
    foreach(p "${SOURCE_DIR}" "${BUILD_DIR}")
      string(FIND "${text}" "${p}" at)
      if(NOT at EQUAL -1)
        message(FATAL_ERROR "${f} names a path of the build machine: ${p}")
      endif()
    endforeach()
  endforeach()
  # Generated files (config, version, exported targets) must hold no absolute path at all; the
  # installed find modules are hand-written and only name search paths.
  file(GLOB generated "${cmake_dir}/terraConfig*.cmake" "${cmake_dir}/terraTargets*.cmake")
  foreach(f IN LISTS generated)
    file(STRINGS "${f}" abs REGEX "\"/[A-Za-z]")
    if(abs)
      message(FATAL_ERROR "${f} holds an absolute path: ${abs}")
    endif()
  endforeach()
  # Every target the export defines is namespaced.
  file(GLOB targets_files "${cmake_dir}/terraTargets*.cmake")
  foreach(f IN LISTS targets_files)
    file(STRINGS "${f}" defs REGEX "add_library\\(")
    foreach(d IN LISTS defs)
      if(NOT d MATCHES "add_library\\(terra::[A-Za-z_]+ ")
        message(FATAL_ERROR "${f} defines an un-namespaced target: ${d}")
      endif()
    endforeach()
  endforeach()
  include("${cmake_dir}/terraConfigVersion.cmake")
  if(NOT PACKAGE_VERSION STREQUAL TERRA_VERSION)
    message(FATAL_ERROR "installed terraConfigVersion.cmake says ${PACKAGE_VERSION}, not ${TERRA_VERSION}")
  endif()
  message(STATUS "installed into ${prefix}: ${installed_cmake}")

elseif(STEP STREQUAL "relocated")
  set(moved "${WORK_DIR}/moved/some/where")
  file(REMOVE_RECURSE "${WORK_DIR}/moved")
  file(MAKE_DIRECTORY "${moved}")
  file(COPY "${prefix}/" DESTINATION "${moved}")
  configure_consumer(relocated cpu "-DCMAKE_PREFIX_PATH=${moved}" "-DEXPECTED_PREFIX=${moved}")
  run(${cmd})

elseif(STEP STREQUAL "cpu")
  configure_consumer(cpu cpu)
  run(${cmd})
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/cpu")
  run("${WORK_DIR}/cpu/consumer")

elseif(STEP STREQUAL "cuda_optional")
  configure_consumer(cuda_optional cuda_optional -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON)
  run(${cmd})

elseif(STEP STREQUAL "cuda_required_missing")
  configure_consumer(cuda_missing cuda_missing -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON)
  run(${cmd})
  configure_consumer(cuda_required cuda_required -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON)
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(terra REQUIRED COMPONENTS cuda) succeeded without CUDA")
  endif()
  if(NOT out MATCHES "component 'cuda' requested")
    message(FATAL_ERROR "the failure does not say that the cuda component is missing")
  endif()
  configure_consumer(cudnn_required cudnn_required -DCMAKE_DISABLE_FIND_PACKAGE_CuDNN=ON)
  execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(rc EQUAL 0)
    message(FATAL_ERROR "find_package(terra REQUIRED COMPONENTS cudnn) succeeded without cuDNN")
  endif()
  if(NOT out MATCHES "component 'cudnn' requested")
    message(FATAL_ERROR "the failure does not say that the cudnn component is missing")
  endif()

elseif(STEP STREQUAL "subdir")
  configure_consumer(subdir subdir "-DTERRA_SOURCE_DIR=${SOURCE_DIR}" -DTERRA_WITH_CUDA=OFF)
  run(${cmd})

elseif(STEP STREQUAL "cuda")
  configure_consumer(cuda cuda -DCMAKE_CUDA_ARCHITECTURES=90)
  run(${cmd})
  run(${CMAKE_COMMAND} --build "${WORK_DIR}/cuda" --target cuda_check cuda_check_cu)

else()
  message(FATAL_ERROR "unknown STEP '${STEP}'")
endif()
