from pathlib import Path

import pytest

from converters.config import (
    ConvertConfig,
    DatasetConfig,
    IODType,
    Preprocessing,
    PreprocessingMode,
    Quantization,
    parse_enum,
    parse_enum_list,
    parse_floats,
    parse_input_shape,
)
from converters.errors import ConfigError

pytestmark = pytest.mark.quick  # part of `invoke test --quick`


def test_enum_list_keeps_order_and_drops_repeats() -> None:
    assert parse_enum_list(Quantization, "int8,fp32,int8", "mode") == (
        Quantization.INT8, Quantization.FP32)
    assert parse_enum_list(Quantization, "all", "mode") == tuple(Quantization)


def test_unknown_enum_value_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown quantization mode 'int4': expected one of "
                                          r"fp32, fp16, dynamic, int8"):
        parse_enum_list(Quantization, "fp32,int4", "quantization mode")
    with pytest.raises(ConfigError, match="unknown --io-dtype 'int16'"):
        parse_enum(IODType, "int16", "--io-dtype")


def test_input_shape_forms() -> None:
    assert parse_input_shape("224,224,3") == (224, 224, 3)
    assert parse_input_shape("96x96x1") == (96, 96, 1)
    assert parse_input_shape(None) is None
    assert parse_input_shape("16000,1") == (16000, 1)
    with pytest.raises(ConfigError, match="must be positive sizes"):
        parse_input_shape("224,0")
    with pytest.raises(ConfigError, match="must look like"):
        parse_input_shape("a,b,c")


def test_preprocessing_mean_std_rules() -> None:
    with pytest.raises(ConfigError, match="needs --mean and --std"):
        Preprocessing(PreprocessingMode.MEAN_STD)
    with pytest.raises(ConfigError, match="only apply to preprocessing 'mean-std'"):
        Preprocessing(PreprocessingMode.UNIT, mean=(1.0,), std=(1.0,))
    with pytest.raises(ConfigError, match="non-zero"):
        Preprocessing(PreprocessingMode.MEAN_STD, mean=(1.0,), std=(0.0,))
    ok = Preprocessing(PreprocessingMode.MEAN_STD, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0))
    assert Preprocessing.from_dict(ok.as_dict()) == ok
    assert parse_floats("1,2.5", "--mean") == (1.0, 2.5)
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        parse_floats("1,x", "--mean")


def test_convert_config_rejects_colliding_model_names(tmp_path: Path) -> None:
    dataset = DatasetConfig(tmp_path)
    with pytest.raises(ConfigError, match="several models share the name m"):
        ConvertConfig(models=(tmp_path / "a" / "m.h5", tmp_path / "b" / "m.keras"), dataset=dataset)
    with pytest.raises(ConfigError, match="--max-accuracy-drop"):
        ConvertConfig(models=(tmp_path / "m.h5",), dataset=dataset, max_accuracy_drop=2)
    with pytest.raises(ConfigError, match="--calibration-size"):
        DatasetConfig(tmp_path, calibration_size=0)
