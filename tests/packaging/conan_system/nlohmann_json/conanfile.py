"""Test-only stand-in for ConanCenter's nlohmann_json: declares the library as provided by the
system (Debian's nlohmann-json3-dev, found by the compiler's default include path), so that
`conan create` of terra works offline. Exported by tests/packaging/conan_test.sh with the
version of the system header. Never upload this recipe."""
from conan import ConanFile


class NlohmannJsonSystem(ConanFile):
    name = "nlohmann_json"
    package_type = "header-library"

    def package_id(self):
        self.info.clear()

    def package_info(self):
        # No files in the package: the headers are the system's.
        self.cpp_info.includedirs = []
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "nlohmann_json")
        self.cpp_info.set_property("cmake_target_name", "nlohmann_json::nlohmann_json")
