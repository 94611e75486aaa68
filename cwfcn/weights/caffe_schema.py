"""A minimal Caffe protobuf schema: the fields that a .caffemodel's weights need.

Built in Python as a `FileDescriptorProto` (no protoc, no generated `caffe_pb2`), in a
private descriptor pool so that it never clashes with a real `caffe_pb2` loaded in the
same process. Field numbers and types are those of Caffe's `src/caffe/proto/caffe.proto`
(BVLC/caffe; checked against two stored versions of that file; num..width are int32
upstream and int64 in some forks, the same varint on the wire):

  NetParameter      name = 1, layers = 2 (V1LayerParameter), layer = 100 (LayerParameter)
  LayerParameter    name = 1, type = 2 (string), blobs = 7
  V1LayerParameter  name = 4, type = 5 (enum LayerType), blobs = 6
  BlobProto         num = 1, channels = 2, height = 3, width = 4 (legacy 4-d shape),
                    data = 5 (packed float), shape = 7, double_data = 8 (packed double)
  BlobShape         dim = 1 (packed int64)

Every other field of a .caffemodel (layer params, bottoms/tops, diffs, ...) is an unknown
field here: protobuf skips it when parsing. Packed and unpacked encodings of the repeated
numbers are both accepted by the parser, whatever the `packed` option says.
"""

from __future__ import annotations

import functools
import types

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FieldProto = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "cwfcn_caffe"

# V1LayerParameter.LayerType of caffe.proto (the deprecated `layers` field), complete, so
# that a V1 file's layer types read back by name.
V1_LAYER_TYPES: dict[str, int] = {
    "NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5,
    "DROPOUT": 6, "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10,
    "IM2COL": 11, "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
    "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18, "SIGMOID": 19,
    "SOFTMAX": 20, "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23, "WINDOW_DATA": 24,
    "ELTWISE": 25, "POWER": 26, "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28,
    "MEMORY_DATA": 29, "ARGMAX": 30, "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33,
    "MVN": 34, "ABSVAL": 35, "SILENCE": 36, "CONTRASTIVE_LOSS": 37, "EXP": 38,
    "DECONVOLUTION": 39,
}  # fmt: skip

# The V2 `type` strings of the V1 enum values that carry weights cwfcn reads.
V1_TO_V2_TYPE: dict[int, str] = {
    V1_LAYER_TYPES["CONVOLUTION"]: "Convolution",
    V1_LAYER_TYPES["DECONVOLUTION"]: "Deconvolution",
    V1_LAYER_TYPES["INNER_PRODUCT"]: "InnerProduct",
}


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    ftype: int,
    *,
    repeated: bool = False,
    type_name: str | None = None,
    packed: bool = False,
) -> None:
    """Adds a field to a message's descriptor.

    Args:
      msg: the message descriptor.
      name: the field's name.
      number: its field number (caffe.proto's).
      ftype: its `FieldDescriptorProto.TYPE_*`.
      repeated: a repeated field (else optional).
      type_name: the message or enum type of a message or enum field, within the package.
      packed: encode a repeated number field packed.
    """
    field = msg.field.add(
        name=name,
        number=number,
        type=ftype,
        label=_FieldProto.LABEL_REPEATED if repeated else _FieldProto.LABEL_OPTIONAL,
    )
    if type_name is not None:
        field.type_name = f".{_PACKAGE}.{type_name}"
    if packed:
        field.options.packed = True


def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The schema as a proto2 `FileDescriptorProto` (package `cwfcn_caffe`)."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="cwfcn_caffe_min.proto", package=_PACKAGE, syntax="proto2"
    )
    shape = file_proto.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, _FieldProto.TYPE_INT64, repeated=True, packed=True)

    blob = file_proto.message_type.add(name="BlobProto")
    _field(blob, "num", 1, _FieldProto.TYPE_INT32)
    _field(blob, "channels", 2, _FieldProto.TYPE_INT32)
    _field(blob, "height", 3, _FieldProto.TYPE_INT32)
    _field(blob, "width", 4, _FieldProto.TYPE_INT32)
    _field(blob, "data", 5, _FieldProto.TYPE_FLOAT, repeated=True, packed=True)
    _field(blob, "shape", 7, _FieldProto.TYPE_MESSAGE, type_name="BlobShape")
    _field(blob, "double_data", 8, _FieldProto.TYPE_DOUBLE, repeated=True, packed=True)

    layer = file_proto.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, _FieldProto.TYPE_STRING)
    _field(layer, "type", 2, _FieldProto.TYPE_STRING)
    _field(layer, "blobs", 7, _FieldProto.TYPE_MESSAGE, repeated=True, type_name="BlobProto")

    v1 = file_proto.message_type.add(name="V1LayerParameter")
    enum = v1.enum_type.add(name="LayerType")
    for name, number in V1_LAYER_TYPES.items():
        enum.value.add(name=name, number=number)
    _field(v1, "name", 4, _FieldProto.TYPE_STRING)
    _field(v1, "type", 5, _FieldProto.TYPE_ENUM, type_name="V1LayerParameter.LayerType")
    _field(v1, "blobs", 6, _FieldProto.TYPE_MESSAGE, repeated=True, type_name="BlobProto")

    net = file_proto.message_type.add(name="NetParameter")
    _field(net, "name", 1, _FieldProto.TYPE_STRING)
    _field(net, "layers", 2, _FieldProto.TYPE_MESSAGE, repeated=True, type_name="V1LayerParameter")
    _field(net, "layer", 100, _FieldProto.TYPE_MESSAGE, repeated=True, type_name="LayerParameter")
    return file_proto


@functools.cache
def messages() -> types.SimpleNamespace:
    """The message classes, built once.

    Returns:
      A namespace with `NetParameter`, `LayerParameter`, `V1LayerParameter`, `BlobProto`
      and `BlobShape` (ordinary protobuf message classes: `FromString`,
      `SerializeToString`, ...).
    """
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_descriptor())
    names = ("NetParameter", "LayerParameter", "V1LayerParameter", "BlobProto", "BlobShape")
    return types.SimpleNamespace(
        **{
            n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{n}"))
            for n in names
        }
    )
