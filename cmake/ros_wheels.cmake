# Glue for building ROS 2 interfaces against the PyPI `ros-*` wheels (no ROS distro installed).
#
# The wheels' exported `<pkg>__rosidl_generator_py` targets carry include paths of the wheel builder's
# interpreter (/opt/python/cp3XX-cp3XX/...). This file points them at the running interpreter and numpy,
# and makes the venv prefix visible to find_package() and the ament index. On a real /opt/ros install no
# target matches /opt/python/ and AMENT_PREFIX_PATH is already set, so it changes nothing there.
find_package(Python3 REQUIRED COMPONENTS Interpreter)
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import sys, sysconfig, numpy; print(sys.prefix + ';' + sysconfig.get_paths()['include'] + ';' + numpy.get_include())"
  OUTPUT_VARIABLE _ros_wheels OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _ros_wheels_rc)
if(NOT _ros_wheels_rc EQUAL 0)
  return()  # no numpy: not a wheels environment, nothing to fix
endif()
list(GET _ros_wheels 0 ROS_WHEELS_PREFIX)
list(GET _ros_wheels 1 ROS_WHEELS_PY_INCLUDE)
list(GET _ros_wheels 2 ROS_WHEELS_NUMPY_INCLUDE)
if(EXISTS "${ROS_WHEELS_PREFIX}/share/ament_cmake/cmake")
  list(APPEND CMAKE_PREFIX_PATH "${ROS_WHEELS_PREFIX}")
  if("$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
    set(ENV{AMENT_PREFIX_PATH} "${ROS_WHEELS_PREFIX}")
  endif()
endif()

# Runs at the end of the top-level directory, after every find_package() created its imported targets
# and before CMake validates their include paths at generate time.
function(_ros_wheels_fix_include_dirs)
  get_directory_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc MATCHES "/opt/python/")
      list(TRANSFORM _inc REPLACE "^/opt/python/[^/]+/include/python[0-9.]+$" "${ROS_WHEELS_PY_INCLUDE}")
      list(TRANSFORM _inc REPLACE "^/opt/python/.*/numpy/(_core|core)/include$" "${ROS_WHEELS_NUMPY_INCLUDE}")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
    endif()
  endforeach()
  # A venv inside the source tree (./.venv) puts its numpy/Python include dirs into the interface of our own
  # generated targets, and CMake refuses to export interface paths under the source dir. Consumers find
  # those headers through their own Python3 anyway, so keep them private to the build.
  get_directory_property(_own DIRECTORY "${CMAKE_SOURCE_DIR}" BUILDSYSTEM_TARGETS)
  foreach(_t IN LISTS _own)
    get_target_property(_type ${_t} TYPE)
    if(_type STREQUAL "INTERFACE_LIBRARY" OR _type STREQUAL "UTILITY")
      continue()
    endif()
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(_inc AND ROS_WHEELS_PREFIX MATCHES "^${CMAKE_SOURCE_DIR}/")
      list(FILTER _inc EXCLUDE REGEX "^${ROS_WHEELS_PREFIX}/")
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_inc}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _ros_wheels_fix_include_dirs)
