//! A run of JSON values as one JSON array: the body of every read of a JSON stream, catch-up or
//! live, and the data of each of its appends as an event.

/// The JSON array of `values`: `[`, the values joined by `,`, `]`.
///
/// An item may also be a run of values already joined by `,`, such as the [`inside`] of an
/// array this function wrote: a live read joins the appends of several events, each one array,
/// into one. Empty items add nothing.
///
/// The values are taken as they are: they were checked as JSON when they were appended.
pub(crate) fn json_array<'a, I>(values: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let values = values.into_iter().filter(|value| !value.is_empty());
    let size: usize = values.clone().map(|value| value.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 1);
    out.push(b'[');
    for (i, value) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(value);
    }
    out.push(b']');
    out
}

/// The values inside an array that [`json_array`] wrote, still joined by `,`.
pub(crate) fn inside(array: &[u8]) -> &[u8] {
    match array {
        [b'[', values @ .., b']'] => values,
        _ => array,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_runs_of_values_join_into_one_array() {
        assert_eq!(json_array([]), b"[]");
        assert_eq!(json_array([&b"1"[..]]), b"[1]");
        assert_eq!(json_array([&b"1"[..], b"{\"a\":[2]}"]), b"[1,{\"a\":[2]}]");
        let first = json_array([&b"1"[..], b"2"]);
        let second = json_array([&b"3"[..]]);
        let joined = json_array([inside(&first), inside(&second), inside(b"[]")]);
        assert_eq!(joined, b"[1,2,3]");
    }
}
