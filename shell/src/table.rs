//! [`Table`]: rows of named columns, printed aligned. The views
//! (`status()`, `ring()`, `preference_list(key)`) return one, so they read
//! as tables at the prompt and as data in a script (`t.rows`, `t[0]`).

use rhai::{Array, Dynamic, Map};

/// A titled table of rows.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Printed above the header.
    pub title: String,
    /// Column names, in order; each row is a map keyed by them.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Map>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table {
            title: title.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row from values in column order.
    pub fn push(&mut self, values: Vec<Dynamic>) {
        let row: Map = self
            .columns
            .iter()
            .zip(values)
            .map(|(c, v)| (c.as_str().into(), v))
            .collect();
        self.rows.push(row);
    }

    /// A table of maps, its columns the keys of the first row.
    pub fn from_rows(rows: Array) -> Result<Table, String> {
        let mut table = Table::default();
        for (i, r) in rows.into_iter().enumerate() {
            let Some(map) = r.try_cast::<Map>() else {
                return Err(format!("row {i} is not a map"));
            };
            if table.columns.is_empty() {
                table.columns = map.keys().map(|k| k.to_string()).collect();
            }
            table.rows.push(map);
        }
        Ok(table)
    }

    /// The rows as a rhai array of maps.
    pub fn rows_array(&self) -> Array {
        self.rows.iter().cloned().map(Dynamic::from).collect()
    }

    /// The value of `column` in every row.
    pub fn column(&self, column: &str) -> Array {
        self.rows
            .iter()
            .map(|r| r.get(column).cloned().unwrap_or(Dynamic::UNIT))
            .collect()
    }
}

fn cell(v: Option<&Dynamic>) -> String {
    match v {
        None => String::new(),
        Some(v) if v.is_unit() => "-".into(),
        Some(v) if v.is_float() => format!("{:.2}", v.as_float().unwrap_or(0.0)),
        Some(v) => v.to_string(),
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .map(|c| cell(r.get(c.as_str())))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if !self.title.is_empty() {
            writeln!(f, "{}", self.title)?;
        }
        let line = |f: &mut std::fmt::Formatter<'_>, items: &[String]| -> std::fmt::Result {
            let padded: Vec<String> = items
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:<w$}"))
                .collect();
            writeln!(f, "{}", padded.join("  ").trim_end())
        };
        line(f, &self.columns)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &cells {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned() {
        let mut t = Table::new("t", &["node", "state"]);
        t.push(vec![Dynamic::from_int(1), Dynamic::from("Alive")]);
        t.push(vec![Dynamic::from_int(12), Dynamic::UNIT]);
        let s = t.to_string();
        assert_eq!(s, "t\nnode  state\n----  -----\n1     Alive\n12    -\n");
        assert_eq!(t.column("node").len(), 2);
    }
}
