import corral


def test_native_module_loads():
    assert corral.__version__
