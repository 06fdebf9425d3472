//! A small builder over ONNX's protobuf types (the `onnx-protobuf` crate's): unique value
//! names, constant tensors as initializers, nodes with typed attributes.

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use protobuf::{EnumOrUnknown, MessageField};

/// One attribute of a node.
pub enum Attr<'a> {
    Int(i64),
    Ints(&'a [i64]),
    Float(f32),
    Text(&'a str),
}

#[derive(Default)]
pub struct GraphBuilder {
    graph: GraphProto,
    next: usize,
}

impl GraphBuilder {
    /// A fresh value name starting with `hint` (names stay readable in Netron and error texts).
    pub fn name(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// A float32 constant of `dims` (row-major `values`).
    pub fn f32s(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(hint, dims, DataType::FLOAT, bytes)
    }

    /// An int64 constant of `dims`.
    pub fn i64s(&mut self, hint: &str, dims: &[usize], values: &[i64]) -> String {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(hint, dims, DataType::INT64, bytes)
    }

    /// A scalar float64 constant.
    pub fn f64_scalar(&mut self, hint: &str, value: f64) -> String {
        self.constant(hint, &[], DataType::DOUBLE, value.to_le_bytes().to_vec())
    }

    /// An initializer holding little-endian `raw` data of `elem`s.
    fn constant(&mut self, hint: &str, dims: &[usize], elem: DataType, raw: Vec<u8>) -> String {
        let name = self.name(hint);
        let mut t = TensorProto::new();
        t.name = name.clone();
        t.dims = dims.iter().map(|&d| d as i64).collect();
        t.data_type = elem as i32;
        t.raw_data = raw;
        self.graph.initializer.push(t);
        name
    }

    /// A scalar float32 constant.
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        self.f32s(hint, &[], &[value])
    }

    /// A scalar int64 constant.
    pub fn int(&mut self, hint: &str, value: i64) -> String {
        self.i64s(hint, &[], &[value])
    }

    /// A node of `op` with one output; returns the output's name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.op_n(op, inputs, attrs, 1).remove(0)
    }

    /// A node of `op` with `outputs` outputs.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        outputs: usize,
    ) -> Vec<String> {
        let names: Vec<String> = (0..outputs).map(|_| self.name(op)).collect();
        let mut node = NodeProto::new();
        node.op_type = op.to_string();
        node.name = format!("{op}_node_{}", self.next);
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = names.clone();
        node.attribute = attrs.iter().map(|(n, a)| attribute(n, a)).collect();
        self.graph.node.push(node);
        names
    }

    /// `value` under the name `name` (the graph's declared outputs).
    pub fn identity_as(&mut self, value: &str, name: &str) {
        let mut node = NodeProto::new();
        node.op_type = "Identity".into();
        node.name = format!("{name}_identity");
        node.input = vec![value.to_string()];
        node.output = vec![name.to_string()];
        self.graph.node.push(node);
    }

    pub fn input(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.input.push(value_info(name, elem, dims));
    }

    pub fn output(&mut self, name: &str, elem: DataType, dims: &[Dim]) {
        self.graph.output.push(value_info(name, elem, dims));
    }

    pub fn finish(mut self, name: &str) -> GraphProto {
        self.graph.name = name.to_string();
        self.graph
    }
}

/// One dimension of a declared input or output.
pub enum Dim<'a> {
    Fixed(usize),
    Named(&'a str),
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    shape.dim = dims
        .iter()
        .map(|d| {
            let mut dim = Dimension::new();
            dim.value = Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Named(s) => dimension::Value::DimParam(s.to_string()),
            });
            dim
        })
        .collect();
    let mut tensor = TensorType::new();
    tensor.elem_type = elem as i32;
    tensor.shape = MessageField::some(shape);
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut info = ValueInfoProto::new();
    info.name = name.to_string();
    info.type_ = MessageField::some(ty);
    info
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.to_string();
    let kind = match value {
        Attr::Int(i) => {
            a.i = *i;
            AttributeType::INT
        }
        Attr::Ints(v) => {
            a.ints = v.to_vec();
            AttributeType::INTS
        }
        Attr::Float(f) => {
            a.f = *f;
            AttributeType::FLOAT
        }
        Attr::Text(s) => {
            a.s = s.as_bytes().to_vec();
            AttributeType::STRING
        }
    };
    a.type_ = EnumOrUnknown::new(kind);
    a
}
