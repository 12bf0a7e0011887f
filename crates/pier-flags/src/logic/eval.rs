//! The interpreter. Operators follow `diegoholiveira/jsonlogic` v3, the engine inside the flagd
//! daemon: `if`, `and` and `or` evaluate lazily, every other operator receives its arguments
//! evaluated. Where that engine panics (and flagd answers `PARSE_ERROR`), this returns
//! [`EvalError::Invalid`].

use serde_json::Value;

use super::value::{less, loose_equals, number, strict_equals, to_number, to_text, truthy};
use super::{MAX_OPERATIONS, Node, Op, flagd_ops};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the rule cannot be applied: {0}")]
    Invalid(&'static str),
    #[error("the rule took more than {MAX_OPERATIONS} operations")]
    TooManyOperations,
}

pub struct Evaluation<'a> {
    data: &'a Value,
    budget: u32,
}

type Result<T> = std::result::Result<T, EvalError>;

impl<'a> Evaluation<'a> {
    pub fn new(data: &'a Value) -> Self {
        Self {
            data,
            budget: MAX_OPERATIONS,
        }
    }

    fn spend(&mut self, operations: usize) -> Result<()> {
        let cost = u32::try_from(operations).unwrap_or(u32::MAX);
        self.budget = self
            .budget
            .checked_sub(cost)
            .ok_or(EvalError::TooManyOperations)?;
        Ok(())
    }

    pub fn node(&mut self, node: &Node) -> Result<Value> {
        self.spend(1)?;
        match node {
            Node::Literal(value) => Ok(value.clone()),
            Node::Array(items) => self.all(items).map(Value::Array),
            Node::Op(op, args) => self.op(*op, args),
        }
    }

    fn all(&mut self, nodes: &[Node]) -> Result<Vec<Value>> {
        nodes.iter().map(|node| self.node(node)).collect()
    }

    fn op(&mut self, op: Op, args: &[Node]) -> Result<Value> {
        match op {
            Op::If | Op::Ternary => return self.conditional(args),
            Op::And | Op::Or => {
                let mut last = Value::Null;
                for arg in args {
                    last = self.node(arg)?;
                    if truthy(&last) == (op == Op::Or) {
                        break;
                    }
                }
                return Ok(last);
            }
            _ => {}
        }
        let values = self.all(args)?;
        let at = |i: usize| values.get(i).unwrap_or(&Value::Null);
        Ok(match op {
            Op::Var => self.var(&values)?,
            Op::Missing => Value::Array(self.missing(&values)),
            Op::MissingSome => self.missing_some(&values),
            Op::Not => Value::Bool(!truthy(at(0))),
            Op::Truthy => Value::Bool(truthy(at(0))),
            Op::Eq => Value::Bool(values.len() >= 2 && loose_equals(at(0), at(1))),
            Op::NotEq => Value::Bool(values.len() < 2 || !loose_equals(at(0), at(1))),
            Op::StrictEq => Value::Bool(values.len() >= 2 && strict_equals(at(0), at(1))),
            Op::StrictNotEq => Value::Bool(values.len() < 2 || !strict_equals(at(0), at(1))),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => Value::Bool(compare(op, &values)),
            Op::In => self.contains(at(0), at(1))?,
            Op::Cat => cat(&values)?,
            Op::Substr => substr(&values)?,
            Op::Merge => {
                let mut merged = Vec::new();
                for value in values {
                    match value {
                        Value::Array(items) => {
                            self.spend(items.len())?;
                            merged.extend(items);
                        }
                        other => merged.push(other),
                    }
                }
                Value::Array(merged)
            }
            Op::Max | Op::Min => extreme(op, &values),
            Op::Add => number(values.iter().map(to_number).sum()),
            Op::Mul => number(values.iter().map(to_number).product()),
            Op::Sub => match values.as_slice() {
                [only] => number(-to_number(only)),
                [a, b, ..] => number(to_number(a) - to_number(b)),
                [] => Value::Null,
            },
            Op::Div => number(to_number(at(0)) / to_number(at(1))),
            Op::Mod => number(to_number(at(0)) % to_number(at(1))),
            Op::Fractional => flagd_ops::fractional(&values, self.data),
            Op::SemVer => flagd_ops::sem_ver(&values),
            Op::StartsWith => flagd_ops::affix(&values, |s, p| s.starts_with(p)),
            Op::EndsWith => flagd_ops::affix(&values, |s, p| s.ends_with(p)),
            Op::If | Op::Ternary | Op::And | Op::Or => unreachable!("handled above"),
        })
    }

    /// `if` chains: `[c1, v1, c2, v2, …, else]`; no branch taken and no else gives null.
    fn conditional(&mut self, args: &[Node]) -> Result<Value> {
        let mut pairs = args.chunks_exact(2);
        for pair in &mut pairs {
            if truthy(&self.node(&pair[0])?) {
                return self.node(&pair[1]);
            }
        }
        match pairs.remainder() {
            [otherwise] => self.node(otherwise),
            _ => Ok(Value::Null),
        }
    }

    /// `{"var": path}` or `{"var": [path, default]}`: a dotted path into the data (array
    /// elements by index); a missing or null value gives the default.
    fn var(&mut self, values: &[Value]) -> Result<Value> {
        let default = if values.len() == 2 {
            values[1].clone()
        } else {
            Value::Null
        };
        let path = match values.first() {
            None => return Ok(self.data.clone()),
            Some(Value::Null) if values.len() == 1 => return Ok(Value::Null),
            Some(Value::String(path)) => path.clone(),
            Some(Value::Number(n)) => to_text(&Value::Number(n.clone())),
            Some(_) => return Err(EvalError::Invalid("a `var` path must be a string")),
        };
        Ok(self.lookup(&path).cloned().unwrap_or(default))
    }

    /// The value at a dotted path, `None` where it is missing or null.
    fn lookup(&mut self, path: &str) -> Option<&'a Value> {
        let mut current = self.data;
        for part in path.split('.').filter(|part| !part.is_empty()) {
            current = match current {
                Value::Object(object) => object.get(part)?,
                Value::Array(items) => {
                    // The engine reads a non-numeric index as 0.
                    let index = part.parse::<f64>().unwrap_or(0.0);
                    if index < 0.0 {
                        return None;
                    }
                    items.get(index as usize)?
                }
                _ => return None,
            };
            if current.is_null() {
                return None;
            }
        }
        Some(current)
    }

    fn missing(&mut self, values: &[Value]) -> Vec<Value> {
        let keys = match values {
            [Value::Array(keys), ..] => keys.as_slice(),
            keys => keys,
        };
        keys.iter()
            .filter(|key| {
                let found = key.as_str().and_then(|path| self.lookup(path));
                found.is_none_or(|value| value.as_str() == Some(""))
            })
            .cloned()
            .collect()
    }

    fn missing_some(&mut self, values: &[Value]) -> Value {
        let need = values.first().map_or(0.0, to_number);
        let keys = values.get(1).cloned().unwrap_or(Value::Array(Vec::new()));
        let total = keys.as_array().map_or(0, Vec::len);
        let missing = self.missing(std::slice::from_ref(&keys));
        if ((total - missing.len()) as f64) >= need {
            Value::Array(Vec::new())
        } else {
            Value::Array(missing)
        }
    }

    /// `in`: a substring of a string, or a member of an array (whose array members are ranges).
    fn contains(&mut self, needle: &Value, haystack: &Value) -> Result<Value> {
        match haystack {
            Value::String(text) => match needle {
                Value::String(part) => Ok(Value::Bool(text.contains(part.as_str()))),
                _ => Err(EvalError::Invalid("`in` looks for a string in a string")),
            },
            Value::Array(items) => {
                self.spend(items.len())?;
                Ok(Value::Bool(items.iter().any(|item| match (item, needle) {
                    (Value::Array(range), _) => {
                        let n = to_number(needle);
                        let bound = |i: usize| range.get(i).map_or(f64::NAN, to_number);
                        n >= bound(0) && bound(1) >= n
                    }
                    (_, Value::Number(n)) => Some(to_number(item)) == n.as_f64(),
                    _ => item == needle,
                })))
            }
            _ => Ok(Value::Bool(false)),
        }
    }
}

/// `<`, `<=`, `>`, `>=`, with the three-argument "between" forms of `<` and `<=` (and, as the
/// engine has them, of `>` and `>=`).
fn compare(op: Op, values: &[Value]) -> bool {
    let lt = |a: &Value, b: &Value| less(a, b);
    let le = |a: &Value, b: &Value| less(a, b) || loose_equals(a, b);
    let holds = |a: &Value, b: &Value| match op {
        Op::Lt => lt(a, b),
        Op::Le => le(a, b),
        Op::Gt => lt(b, a),
        _ => le(b, a),
    };
    match values {
        [a, b] => holds(a, b),
        [a, b, c, ..] => holds(a, b) && holds(b, c),
        _ => false,
    }
}

/// The engine's `ToString` rejects booleans, arrays and objects.
fn text(value: &Value) -> Result<String> {
    match value {
        Value::Bool(_) | Value::Array(_) | Value::Object(_) => {
            Err(EvalError::Invalid("only strings and numbers join as text"))
        }
        other => Ok(to_text(other)),
    }
}

/// `cat` joins its arguments as text, and, as the engine does, trims the result when it joined
/// more than one.
fn cat(values: &[Value]) -> Result<Value> {
    Ok(Value::String(match values {
        [] => String::new(),
        [only] => text(only)?,
        many => many
            .iter()
            .map(text)
            .collect::<Result<String>>()?
            .trim()
            .to_owned(),
    }))
}

/// `substr`: characters from `from` (negative counts from the end), `length` of them (negative
/// stops that many before the end).
fn substr(values: &[Value]) -> Result<Value> {
    let chars: Vec<char> = text(values.first().unwrap_or(&Value::Null))?
        .chars()
        .collect();
    let len = chars.len() as i64;
    let mut from = values.get(1).map_or(0.0, to_number) as i64;
    if from < 0 {
        from += len;
    }
    if from < 0 || from > len {
        return Ok(Value::String(chars.into_iter().collect()));
    }
    let to = match values.get(2).map(|n| to_number(n) as i64) {
        Some(length) if length < 0 => len + length,
        Some(length) => from.saturating_add(length),
        None => from + len,
    }
    .min(len);
    let slice = if to <= from {
        String::new()
    } else {
        chars[from as usize..to as usize].iter().collect()
    };
    Ok(Value::String(slice))
}

fn extreme(op: Op, values: &[Value]) -> Value {
    let numbers = values.iter().map(to_number);
    let found = if op == Op::Max {
        numbers.reduce(f64::max)
    } else {
        numbers.reduce(f64::min)
    };
    found.map_or(Value::Null, number)
}
