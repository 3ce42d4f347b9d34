//! A readable field-by-field difference between two answers.
//!
//! Fields are matched by path; one missing on a side shows as `(missing)`. Only differing fields
//! are listed, with how many were equal, so a reader sees at once what to fix.

use std::collections::BTreeMap;

pub struct Diff {
    /// (path, left value, right value) for every field that differs.
    pub differing: Vec<(String, String, String)>,
    pub equal: usize,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.differing.is_empty()
    }

    /// A table of the differing fields under the two sides' names. A field whose value is too
    /// long for a column (a watch's list of events) shows both values on lines of their own.
    pub fn render(&self, left: &str, right: &str, indent: &str) -> String {
        let fits = |d: &&(String, String, String)| d.1.len() <= COLUMN && d.2.len() <= COLUMN;
        let width = |f: fn(&(String, String, String)) -> usize, title: &str| {
            self.differing
                .iter()
                .filter(fits)
                .map(f)
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let wp = width(|d| d.0.len(), "field");
        let wl = width(|d| d.1.len(), left);
        let ws = left.len().max(right.len());
        let mut out = format!("{indent}{:wp$}  {:wl$}  {right}\n", "field", left);
        for d in &self.differing {
            let (path, l, r) = d;
            if fits(&d) {
                out.push_str(&format!("{indent}{path:wp$}  {l:wl$}  {r}\n"));
            } else {
                out.push_str(&format!(
                    "{indent}{path}\n{indent}  {left:ws$}  {l}\n{indent}  {right:ws$}  {r}\n"
                ));
            }
        }
        out.push_str(&format!(
            "{indent}({} other field{} equal)\n",
            self.equal,
            if self.equal == 1 { "" } else { "s" }
        ));
        out
    }
}

/// The widest value shown in a table column.
const COLUMN: usize = 40;

const MISSING: &str = "(missing)";

pub fn diff(left: &[(String, String)], right: &[(String, String)]) -> Diff {
    let right_by_path: BTreeMap<&str, &str> = right
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    let left_paths: BTreeMap<&str, ()> = left.iter().map(|(p, _)| (p.as_str(), ())).collect();
    let mut differing = Vec::new();
    let mut equal = 0;
    for (path, l) in left {
        match right_by_path.get(path.as_str()) {
            Some(r) if *r == l => equal += 1,
            Some(r) => differing.push((path.clone(), l.clone(), r.to_string())),
            None => differing.push((path.clone(), l.clone(), MISSING.into())),
        }
    }
    for (path, r) in right {
        if !left_paths.contains_key(path.as_str()) {
            differing.push((path.clone(), MISSING.into(), r.clone()));
        }
    }
    Diff { differing, equal }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lists_only_what_differs_and_what_is_missing() {
        let etcd = f(&[("header.revision", "5"), ("more", "true"), ("count", "3")]);
        let other = f(&[("header.revision", "5"), ("more", "false"), ("extra", "1")]);
        let d = diff(&etcd, &other);
        assert_eq!(d.equal, 1);
        assert_eq!(
            d.differing,
            vec![
                ("more".into(), "true".into(), "false".into()),
                ("count".into(), "3".into(), MISSING.into()),
                ("extra".into(), MISSING.into(), "1".into()),
            ]
        );
        let table = d.render("etcd", "faultline", "  ");
        assert!(table.contains("  more   true       false"), "{table}");
        assert!(table.contains("(1 other field equal)"), "{table}");
    }

    #[test]
    fn a_long_value_goes_on_lines_of_its_own() {
        let long = "17 [6 /registry/pods/ns-0/b, 7 /registry/configmaps/ns-0/a]";
        let d = diff(
            &f(&[("events", long), ("canceled", "false")]),
            &f(&[("events", "0 []"), ("canceled", "true")]),
        );
        let table = d.render("etcd", "faultline", "  ");
        assert_eq!(
            table,
            format!(
                "  field     etcd   faultline\n  events\n    etcd       {long}\n    \
                 faultline  0 []\n  canceled  false  true\n  (0 other fields equal)\n"
            )
        );
    }

    #[test]
    fn equal_answers_have_no_difference() {
        let a = f(&[("count", "1")]);
        assert!(diff(&a, &a).is_empty());
    }
}
