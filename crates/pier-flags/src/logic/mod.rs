//! Targeting rules: JSON Logic with flagd's operators, compiled once when a flag is stored and
//! evaluated on every request. Compiling rejects what flagd would only fail on at evaluation
//! (an unknown operator, a `$ref` to no evaluator or round a cycle of them, nesting deeper than
//! [`MAX_DEPTH`]) with the JSON path of the fault; evaluating is bounded by
//! [`MAX_OPERATIONS`] and never panics.

mod eval;
mod flagd_ops;
pub mod value;

use pier_core::ValidationErrors;
use serde_json::{Map, Value};

pub use eval::EvalError;

/// How deeply rules may nest (objects and arrays both count).
pub const MAX_DEPTH: usize = 64;
/// Rule nodes (and array elements scanned) one evaluation may visit before it gives up.
pub const MAX_OPERATIONS: u32 = 20_000;
/// Nodes one compiled rule may hold once `$ref`s are inlined (shared evaluators used twice at each
/// of many levels would otherwise multiply).
pub const MAX_NODES: usize = 100_000;

/// A compiled targeting rule.
#[derive(Debug, Clone)]
pub struct Rule(Node);

#[derive(Debug, Clone)]
enum Node {
    Literal(Value),
    Array(Vec<Node>),
    Op(Op, Vec<Node>),
}

macro_rules! operators {
    ($($name:literal => $op:ident,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Op { $($op,)* }

        impl Op {
            fn named(name: &str) -> Option<Self> {
                match name { $($name => Some(Self::$op),)* _ => None }
            }
        }

        /// Every operator a rule may use.
        pub const OPERATORS: &[&str] = &[$($name,)*];
    };
}

operators! {
    "var" => Var, "missing" => Missing, "missing_some" => MissingSome,
    "if" => If, "?:" => Ternary, "and" => And, "or" => Or, "!" => Not, "!!" => Truthy,
    "==" => Eq, "!=" => NotEq, "===" => StrictEq, "!==" => StrictNotEq,
    "<" => Lt, "<=" => Le, ">" => Gt, ">=" => Ge,
    "in" => In, "cat" => Cat, "substr" => Substr, "merge" => Merge,
    "max" => Max, "min" => Min, "+" => Add, "-" => Sub, "*" => Mul, "/" => Div, "%" => Mod,
    "fractional" => Fractional, "sem_ver" => SemVer, "starts_with" => StartsWith,
    "ends_with" => EndsWith,
}

impl Rule {
    /// Compiles `rule`, found at `path`, inlining `$ref`s to `evaluators` as flagd does.
    pub fn compile(
        rule: &Value,
        path: &str,
        evaluators: &Map<String, Value>,
    ) -> Result<Self, ValidationErrors> {
        let mut compiler = Compiler {
            evaluators,
            refs: Vec::new(),
            nodes: 0,
        };
        compiler.node(rule, path, 1).map(Rule)
    }

    /// The rule with every `$ref` replaced by the evaluator it names: what export writes.
    pub fn inlined(&self) -> Value {
        self.0.to_json()
    }

    /// Whether the rule may read `$flagd.timestamp`, so that its result can change with time
    /// alone: a `var` of that path, of the whole data, or of a path computed at evaluation.
    pub fn reads_clock(&self) -> bool {
        self.0.reads_clock()
    }

    /// Evaluates against `data` (the context with `$flagd` added).
    pub fn apply(&self, data: &Value) -> Result<Value, EvalError> {
        eval::Evaluation::new(data).node(&self.0)
    }
}

struct Compiler<'a> {
    evaluators: &'a Map<String, Value>,
    /// The `$ref`s being inlined, innermost last: a name seen twice is a cycle.
    refs: Vec<&'a str>,
    nodes: usize,
}

impl<'a> Compiler<'a> {
    fn node(&mut self, rule: &Value, path: &str, depth: usize) -> Result<Node, ValidationErrors> {
        if depth > MAX_DEPTH {
            return Err(ValidationErrors::single(
                path,
                "too_deep",
                format!("rules nest at most {MAX_DEPTH} levels deep"),
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ValidationErrors::single(
                path,
                "too_large",
                format!("a rule holds at most {MAX_NODES} nodes once `$ref`s are inlined"),
            ));
        }
        match rule {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.node(item, &format!("{path}[{i}]"), depth + 1))
                .collect::<Result<_, _>>()
                .map(Node::Array),
            // flagd's engine reads an object with one key as an operation, anything else as data.
            Value::Object(object) if object.len() == 1 => {
                let (name, args) = object.iter().next().expect("one entry");
                let here = format!("{path}.{name}");
                if name == "$ref" {
                    return self.reference(args, &here, depth);
                }
                let Some(op) = Op::named(name) else {
                    return Err(ValidationErrors::single(
                        &here,
                        "unknown_operator",
                        format!(
                            "`{name}` is not an operator; expected one of: {}",
                            OPERATORS.join(", ")
                        ),
                    ));
                };
                let args = match args {
                    Value::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.node(item, &format!("{here}[{i}]"), depth + 1))
                        .collect::<Result<_, _>>()?,
                    single => vec![self.node(single, &here, depth + 1)?],
                };
                Ok(Node::Op(op, args))
            }
            other => Ok(Node::Literal(other.clone())),
        }
    }

    fn reference(
        &mut self,
        name: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Node, ValidationErrors> {
        let Some((name, body)) = name
            .as_str()
            .and_then(|name| self.evaluators.get_key_value(name))
        else {
            return Err(ValidationErrors::single(
                path,
                "unknown_evaluator",
                format!("{name} names no entry of `$evaluators`"),
            ));
        };
        if self.refs.contains(&name.as_str()) {
            return Err(ValidationErrors::single(
                path,
                "evaluator_cycle",
                format!(
                    "`$evaluators` refer to each other in a cycle: {} -> {name}",
                    self.refs.join(" -> ")
                ),
            ));
        }
        self.refs.push(name);
        let node = self.node(body, &format!("$evaluators.{name}"), depth);
        self.refs.pop();
        node
    }
}

impl Node {
    fn reads_clock(&self) -> bool {
        match self {
            Node::Literal(_) => false,
            Node::Array(items) => items.iter().any(Node::reads_clock),
            Node::Op(Op::Var, args) => match args.first() {
                Some(Node::Literal(Value::String(path))) => {
                    let path = path.trim_start_matches('.');
                    path.is_empty() || path == "$flagd" || path.starts_with("$flagd.timestamp")
                }
                Some(Node::Literal(Value::Number(_) | Value::Null)) => false,
                _ => true,
            },
            Node::Op(_, args) => args.iter().any(Node::reads_clock),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Node::Literal(value) => value.clone(),
            Node::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Op(op, args) => {
                let name = OPERATORS[*op as usize];
                let args = Value::Array(args.iter().map(Node::to_json).collect());
                Value::Object(Map::from_iter([(name.to_owned(), args)]))
            }
        }
    }
}
