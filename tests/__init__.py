"""The test suite, one folder per package of the repository (tests/train for hybrid_jax/train,
tests/kernels/gated_delta_rule/gpu for kernels/gated_delta_rule/gpu, ...). Every folder is a
package, so test files in different folders may share a basename; shared helpers are in
tests/helpers and are imported as `from tests.helpers.<module> import ...`."""
