"""Conan 2 recipe for terra, a header-only C++20 deep-learning library.

    conan create . -s compiler.cppstd=20                 # CPU: terra::terra
    conan create . -s compiler.cppstd=20 -o "terra/*:cuda=True"   # adds terra::cuda

The version is read from include/terra/core/version.hpp (the one place it is written).
"""
import os
import re

from conan import ConanFile
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class TerraConan(ConanFile):
    name = "terra"
    description = "Imperative-symbolic co-execution for C++ deep learning (header-only, C++20)"
    license = "Apache-2.0"
    homepage = "https://example.invalid/terra"
    url = "https://example.invalid/terra"
    topics = ("deep-learning", "tensor", "autograd", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    # cuda: the terra::cuda component (CUDA runtime, cuBLAS/cuBLASLt, CCCL, and cuDNN when
    # found). The CUDA toolkit is not a Conan package: it is found on the consumer's machine.
    options = {"cuda": [True, False]}
    default_options = {"cuda": False}
    exports_sources = ("include/*", "cmake/FindCuDNN.cmake", "cmake/terraCudaDeps.cmake",
                       "cmake/conan/*", "LICENSE")
    no_copy_source = True

    def set_version(self):
        text = load(self, os.path.join(self.recipe_folder, "include", "terra", "core",
                                       "version.hpp"))
        parts = []
        for part in ("MAJOR", "MINOR", "PATCH"):
            m = re.search(r"^#define TERRA_VERSION_%s +(\d+)$" % part, text, re.MULTILINE)
            if not m:
                raise RuntimeError("TERRA_VERSION_%s not found in version.hpp" % part)
            parts.append(m.group(1))
        self.version = ".".join(parts)

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        # Checkpoints (io/checkpoint.hpp) use nlohmann_json; it reaches consumers' headers.
        self.requires("nlohmann_json/[>=3.10 <4]")

    def package_id(self):
        # Headers only: one package for every configuration. The cuda option changes only what
        # package_info() declares, never the packaged files.
        self.info.clear()

    def validate(self):
        check_min_cppstd(self, 20)

    def build(self):
        pass

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "include"),
             os.path.join(self.package_folder, "include"))
        cmake_dir = os.path.join(self.package_folder, "lib", "cmake", "terra")
        for f in ("FindCuDNN.cmake", "terraCudaDeps.cmake"):
            copy(self, f, os.path.join(self.source_folder, "cmake"), cmake_dir)
        copy(self, "*.cmake", os.path.join(self.source_folder, "cmake", "conan"), cmake_dir)

    def package_info(self):
        self.cpp_info.set_property("cmake_file_name", "terra")
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []

        core = self.cpp_info.components["core"]
        core.set_property("cmake_target_name", "terra::terra")
        core.requires = ["nlohmann_json::nlohmann_json"]
        core.bindirs = []
        core.libdirs = []
        if self.settings.os in ("Linux", "FreeBSD"):
            core.system_libs = ["pthread", "m"]

        if self.options.cuda:
            cuda = self.cpp_info.components["cuda"]
            cuda.set_property("cmake_target_name", "terra::cuda")
            cuda.requires = ["core"]
            cuda.defines = ["TERRA_WITH_CUDA=1"]
            cuda.includedirs = []
            cuda.bindirs = []
            cuda.libdirs = []
            # The toolkit, CCCL and cuDNN are found by CMake on the consumer's machine; this
            # module (included by the generated terra-config.cmake; CMakeDeps reads build
            # modules from the root cpp_info only) links them to terra::cuda.
            self.cpp_info.builddirs = [os.path.join("lib", "cmake", "terra")]
            self.cpp_info.set_property(
                "cmake_build_modules",
                [os.path.join("lib", "cmake", "terra", "terra-conan-cuda.cmake")])
