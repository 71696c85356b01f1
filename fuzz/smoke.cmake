# Included by tests/CMakeLists.txt: the ctest `fuzz_smoke` builds every fuzz/fuzz_*.cpp target with
# clang (ASan + UBSan + libFuzzer) in a separate build folder inside this one and runs each for 20 s
# on seeds made from the real files in the shared folder. A finding fails the test; the crashing
# input is kept under fuzz-build/artifacts/ and the log says how to reproduce it.
find_program(QFORGE_CLANGXX NAMES clang++ clang++-14)
find_program(QFORGE_BASH bash)
if(QFORGE_CLANGXX AND QFORGE_BASH)
  add_test(NAME fuzz_smoke
           COMMAND ${QFORGE_BASH} ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh --smoke
                   --build-dir ${CMAKE_BINARY_DIR}/fuzz-build --shared ${QFORGE_SHARED_DIR})
  # The clang build takes about a minute on 2 cores the first time, then only rebuilds what changed.
  set_tests_properties(fuzz_smoke PROPERTIES TIMEOUT 600 LABELS fuzz)
else()
  message(STATUS "clang++ not found: the fuzz_smoke test is not added (apt-get install clang libclang-rt-14-dev)")
endif()
