//! The bounded pickle machine: `data.pkl` is decoded by candle's reader ([`Stack`]), which never
//! runs code, but only after [`prescan`] has simulated that reader opcode by opcode and ruled out
//! everything that would make it panic or exhaust the process (the bounds are in
//! [`limits`](super::limits)).

use std::collections::HashMap;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use candle_core::pickle::{Object, Stack};

use super::limits::{Reason, MAX_PICKLE_DEPTH, MAX_PICKLE_NODES};

/// Decodes `data.pkl` with candle's reader after [`prescan`] has ruled out what would make that
/// reader panic or exhaust the process.
pub(super) fn parse_pickle(pkl: &[u8]) -> Reason<Object> {
    prescan(pkl)?;
    // Backstop: candle's reader indexes and shifts without checks in places, and a panic there
    // must not take down a program that merely opened a bad file. The prescan should leave it
    // nothing to panic on; this turns anything it missed into an error.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(&mut Cursor::new(pkl))?;
        stack.finalize()
    }));
    match parsed {
        Ok(Ok(root)) => Ok(root),
        Ok(Err(e)) => Err(format!("damaged or unsupported pickle ({e})")),
        Err(_) => Err("damaged pickle (the pickle reader failed on it)".into()),
    }
}

/// What one value on the simulated pickle stack amounts to.
#[derive(Debug, Clone, Copy)]
struct Slot {
    mark: bool,
    depth: u32,
    nodes: u64,
}

impl Slot {
    const LEAF: Slot = Slot {
        mark: false,
        depth: 1,
        nodes: 1,
    };

    fn parent_of(children: &[Slot]) -> Slot {
        Slot {
            mark: false,
            depth: children.iter().map(|c| c.depth).max().unwrap_or(0) + 1,
            nodes: children.iter().map(|c| c.nodes).sum::<u64>() + 1,
        }
    }

    fn absorb(&mut self, child: Slot) {
        self.depth = self.depth.max(child.depth + 1);
        self.nodes += child.nodes;
    }
}

/// A cursor over `data.pkl` that reports running off its end as truncation.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Reason<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle (ends inside the record at byte {})",
                    self.pos
                )
            })?;
        let taken = &self.data[self.pos..end];
        self.pos = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Reason<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Reason<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Reason<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (unterminated name)")?;
        self.pos += len + 1;
        Ok(&rest[..len])
    }
}

/// Walks the opcodes exactly as candle's `Stack::read_loop` will (same opcode set, same stack
/// effects, memo entries copied by value), without building anything, and refuses input that
/// would make that reader panic (a LONG1 of more than 8 bytes overflows its shift) or fail in ways
/// `catch_unwind` cannot catch: nesting deep enough to overflow the stack on drop, or memo copies
/// that grow exponentially. Truncation is reported here too, with a position.
pub(super) fn prescan(pkl: &[u8]) -> Reason<()> {
    let mut input = Bytes { data: pkl, pos: 0 };
    let mut machine = Machine::default();
    loop {
        let at = input.pos;
        let op = input.u8()?;
        // The one value this opcode leaves on the stack, if it pushes one.
        let pushed = match op {
            b'.' => return machine.stop(),
            // BINGET, LONG_BINGET: a copy of a memo entry.
            b'h' | b'j' => Some(machine.memo_get(op, at, &mut input)?),
            // BINPUT, LONG_BINPUT: a copy of the top of the stack into the memo.
            b'q' | b'r' => {
                machine.memo_put(op, &mut input)?;
                None
            }
            // Opcodes that pop values and push the object built from them.
            b'Q' | 0x85..=0x87 | b't' | b'R' | 0x81 | b'b' => Some(machine.build(op)?),
            // Opcodes that pop values into the container below them.
            b'a' | b's' | b'e' | b'u' => {
                machine.append(op)?;
                None
            }
            _ => literal(op, at, &mut input)?,
        };
        machine.push(pushed)?;
    }
}

/// The opcodes that take nothing from the stack: PROTO (which pushes nothing), and those that
/// push one leaf read from their arguments or implied by the opcode. Anything else is refused.
fn literal(op: u8, at: usize, input: &mut Bytes) -> Reason<Option<Slot>> {
    Ok(match op {
        0x80 => {
            input.u8()?;
            None
        }
        b'c' => {
            input.line()?;
            input.line()?;
            Some(Slot::LEAF)
        }
        // BININT1, BININT2, BININT, BINFLOAT: a fixed-size argument.
        b'K' | b'M' | b'J' | b'G' => {
            input.take(match op {
                b'K' => 1,
                b'M' => 2,
                b'J' => 4,
                _ => 8,
            })?;
            Some(Slot::LEAF)
        }
        b'X' => {
            let len = input.u32()?;
            input.take(len as usize)?;
            // Long strings weigh more when the memo copies them.
            Some(Slot {
                nodes: 1 + u64::from(len) / 32,
                ..Slot::LEAF
            })
        }
        0x8a => {
            let n = input.u8()?;
            if n > 8 {
                return Err(format!(
                    "unsupported pickle (a {n}-byte integer at byte {at}; at most 8 are read)"
                ));
            }
            input.take(usize::from(n))?;
            Some(Slot::LEAF)
        }
        // candle maps DICT (`d`) to EMPTY_DICT, so it pops nothing.
        0x88 | 0x89 | b'N' | b'}' | b'd' | b']' | b')' => Some(Slot::LEAF),
        b'(' => Some(Slot {
            mark: true,
            depth: 0,
            nodes: 1,
        }),
        other => {
            return Err(format!(
                "pickle opcode 0x{other:02x} at byte {at} is not supported (damaged file, or \
                 a pickle protocol above 2)"
            ))
        }
    })
}

/// The simulated reader: its stack and memo as [`Slot`]s, and the objects it would have built so
/// far (including memo copies), which must stay within [`MAX_PICKLE_NODES`].
#[derive(Default)]
struct Machine {
    stack: Vec<Slot>,
    memo: HashMap<u32, Slot>,
    budget: u64,
}

impl Machine {
    fn pop(&mut self) -> Reason<Slot> {
        self.stack
            .pop()
            .ok_or_else(|| "malformed pickle (pops an empty stack)".to_string())
    }

    fn pop_to_mark(&mut self) -> Reason<Vec<Slot>> {
        let mark = self
            .stack
            .iter()
            .rposition(|s| s.mark)
            .ok_or_else(|| "malformed pickle (no mark on the stack)".to_string())?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Reason<&mut Slot> {
        self.stack
            .last_mut()
            .ok_or_else(|| "malformed pickle (empty stack)".to_string())
    }

    /// BINGET, LONG_BINGET: the memo entry, whose copy costs as many objects as it holds.
    fn memo_get(&mut self, op: u8, at: usize, input: &mut Bytes) -> Reason<Slot> {
        let id = if op == b'h' {
            u32::from(input.u8()?)
        } else {
            input.u32()?
        };
        let slot = *self
            .memo
            .get(&id)
            .ok_or_else(|| format!("malformed pickle (memo {id} unset at byte {at})"))?;
        self.budget += slot.nodes;
        Ok(slot)
    }

    /// BINPUT, LONG_BINPUT: the top of the stack, copied into the memo.
    fn memo_put(&mut self, op: u8, input: &mut Bytes) -> Reason<()> {
        let id = if op == b'q' {
            u32::from(input.u8()?)
        } else {
            input.u32()?
        };
        let slot = *self.top()?;
        self.budget += slot.nodes;
        self.memo.insert(id, slot);
        Ok(())
    }

    /// TUPLE1..3, TUPLE, BINPERSID, REDUCE, NEWOBJ, BUILD: the new object made of the values
    /// they pop.
    fn build(&mut self, op: u8) -> Reason<Slot> {
        Ok(match op {
            b'Q' => Slot::parent_of(&[self.pop()?]),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n {
                    return Err("malformed pickle (pops an empty stack)".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                Slot::parent_of(&items)
            }
            b't' => Slot::parent_of(&self.pop_to_mark()?),
            // REDUCE, NEWOBJ, BUILD.
            _ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                Slot::parent_of(&[callable, args])
            }
        })
    }

    /// APPEND, SETITEM, APPENDS, SETITEMS: the popped values, added to the container below.
    fn append(&mut self, op: u8) -> Reason<()> {
        let items = match op {
            b'a' => vec![self.pop()?],
            b's' => {
                let value = self.pop()?;
                vec![self.pop()?, value]
            }
            _ => self.pop_to_mark()?,
        };
        let container = self.top()?;
        for item in items {
            container.absorb(item);
        }
        if container.depth > MAX_PICKLE_DEPTH {
            return Err(format!(
                "pickle nested deeper than {MAX_PICKLE_DEPTH} levels"
            ));
        }
        Ok(())
    }

    /// Ends an opcode: pushes what it made, if anything, and checks the bounds.
    fn push(&mut self, pushed: Option<Slot>) -> Reason<()> {
        if let Some(slot) = pushed {
            if slot.depth > MAX_PICKLE_DEPTH {
                return Err(format!(
                    "pickle nested deeper than {MAX_PICKLE_DEPTH} levels"
                ));
            }
            self.budget += 1;
            self.stack.push(slot);
        }
        if self.budget > MAX_PICKLE_NODES {
            return Err(format!(
                "pickle would build more than {MAX_PICKLE_NODES} objects"
            ));
        }
        Ok(())
    }

    /// STOP: the pickle's value must be on the stack.
    fn stop(&self) -> Reason<()> {
        if self.stack.is_empty() {
            Err("malformed pickle (nothing on the stack at STOP)".into())
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{fixture, pickle_of};
    use super::*;

    #[test]
    fn every_truncated_pickle_is_an_error() {
        let pkl = pickle_of(&fixture("lighter_at1.state-dict-f16.pth"));
        for len in (0..pkl.len() - 1).step_by(7) {
            let err = parse_pickle(&pkl[..len]).unwrap_err();
            assert!(
                err.contains("truncated") || err.contains("malformed"),
                "cut at {len}: {err}"
            );
        }
    }
}
