//! `provisio collect`, `provisio group ...` and `provisio cleanup`: many services at once.
//! `collect` reads the field and filter notations of seed 003 (`[service.parent_invoice:X]`,
//! `["service,parent_invoice":X]`, `[service:[parent_invoice:X]]`) and `key=value` words.

use anyhow::{anyhow, bail};
use serde_json::{Map, Value};

use provisio_api::requests::{CleanupRequest, CollectQuery, GroupRequest, MembersQuery, RecordRef};
use provisio_api::views::{Collected, GroupMembers, GroupOp, GroupResult, MemberResult};
use serde::Serialize;

use super::Ctx;
use crate::output::{self, Format};

/// Parses `[a.b,c.d]` (or `a.b,c.d`) into field paths; `[]` is none.
pub fn parse_fields(text: &str) -> anyhow::Result<Vec<String>> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    // Commas inside quotes separate path segments (`"product,settings,quota"`), not fields.
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in inner.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if quoted => current.push('.'),
            ',' => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    if quoted {
        bail!("fields: an unclosed quote in {text:?}");
    }
    fields.push(current);
    Ok(fields
        .into_iter()
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .map(alias)
        .collect())
}

/// The seed calls the invoice fields `billing.*`; here they are the service's.
fn alias(path: String) -> String {
    match path.strip_prefix("billing.") {
        Some(rest) => format!("service.{rest}"),
        None => path,
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn err(&self, what: &str) -> anyhow::Error {
        anyhow!(
            "filters: {what} at position {} of {:?}",
            self.i + 1,
            String::from_utf8_lossy(self.s)
        )
    }

    /// A quoted word (where `,` stands for `.` in keys) or a bare one up to a delimiter.
    fn word(&mut self, stops: &[u8]) -> anyhow::Result<String> {
        self.ws();
        if self.eat(b'"') {
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i] != b'"' {
                self.i += 1;
            }
            if self.i >= self.s.len() {
                return Err(self.err("an unclosed quote"));
            }
            let w = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
            self.i += 1;
            return Ok(w);
        }
        let start = self.i;
        while self.i < self.s.len() && !stops.contains(&self.s[self.i]) {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i])
            .trim()
            .to_string())
    }

    /// `[entry, entry, …]`, each `key:value` or `key:[…]` (nested keys join with dots).
    fn list(&mut self, prefix: &str, out: &mut Vec<(String, String)>) -> anyhow::Result<()> {
        if !self.eat(b'[') {
            return Err(self.err("expected '['"));
        }
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            let key = self.word(b":,]")?.replace(',', ".");
            if key.is_empty() {
                return Err(self.err("expected a field name"));
            }
            if !self.eat(b':') {
                return Err(self.err("expected ':' after a field name"));
            }
            let path = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            self.ws();
            if self.s.get(self.i) == Some(&b'[') {
                self.list(&path, out)?;
            } else {
                let value = self.word(b",]")?;
                out.push((alias(path), value));
            }
            if self.eat(b',') {
                continue;
            }
            if self.eat(b']') {
                return Ok(());
            }
            return Err(self.err("expected ',' or ']'"));
        }
    }
}

/// Parses one filter argument: a bracketed notation or `key=value`.
pub fn parse_filter(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let t = text.trim();
    if !t.starts_with('[') {
        return match t.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok(vec![(alias(k.trim().to_string()), v.to_string())])
            }
            _ => bail!("filters: {t:?} is neither [field:value] nor field=value"),
        };
    }
    let mut p = Parser {
        s: t.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    p.list("", &mut out)?;
    p.ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected text after ']'"));
    }
    Ok(out)
}

#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// Fields to show, e.g. `[service.username,product.settings.quota]` (`[]`: a summary)
    fields: String,
    /// Filters: `[service.parent_invoice:X]`, `["service,parent_invoice":X]`,
    /// `[service:[parent_invoice:X]]` or `service.status=active`
    filters: Vec<String>,
    /// YAML keyed by service instead of a table
    #[arg(long)]
    yaml: bool,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, v, out);
            }
        }
        other => out.push((prefix.to_string(), text(other))),
    }
}

pub async fn collect(args: CollectArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let mut body = CollectQuery {
        fields: parse_fields(&args.fields)?,
        ..Default::default()
    };
    for f in &args.filters {
        body.filters.extend(parse_filter(f)?);
    }
    let mut items: Vec<Collected> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = [
            ("limit", "1000".to_string()),
            ("cursor", cursor.take().unwrap_or_default()),
        ];
        let page = ctx.api.collect(&body, &query).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if ctx.output == Format::Json {
        return output::print_json(&serde_json::to_value(&items)?);
    }
    if items.is_empty() {
        return output::emit("no services match");
    }
    if args.yaml {
        let mut doc = Map::new();
        for it in &items {
            let mut entry = match &it.values {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            };
            entry.insert("active".into(), it.active.into());
            doc.insert(format!("service-{}", it.service_id), Value::Object(entry));
        }
        let yaml = serde_norway::to_string(&Value::Object(doc))?;
        return output::emit(yaml.trim_end());
    }
    let mut header = vec!["SERVICE".to_string(), "ACTIVE".to_string()];
    let mut rows = Vec::new();
    for (n, it) in items.iter().enumerate() {
        let mut cells = Vec::new();
        leaves("", &it.values, &mut cells);
        if n == 0 {
            header.extend(cells.iter().map(|(k, _)| k.to_uppercase()));
        }
        let mut row = vec![it.service_id.to_string(), it.active.to_string()];
        row.extend(cells.into_iter().map(|(_, v)| v));
        rows.push(row);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(header);
    for r in rows {
        t.add_row(r);
    }
    output::emit(&t.to_string())
}

#[derive(clap::Subcommand, Debug)]
pub enum GroupCmd {
    /// List the live services of an invoice group (master first)
    Show {
        invoice: String,
        #[arg(long)]
        children_only: bool,
        /// Members per request; every page is fetched
        #[arg(long, value_name = "N", default_value_t = GROUP_PAGE)]
        page_size: u32,
    },
    /// Override product settings on every member (`--set quota=5000`) and push them to the remote
    Edit {
        invoice: String,
        /// NAME=VALUE (a JSON value, or text); repeatable
        #[arg(long = "set", value_name = "NAME=VALUE", required = true)]
        set: Vec<String>,
        #[command(flatten)]
        common: GroupArgs,
    },
    /// Suspend every active member
    Suspend {
        invoice: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: GroupArgs,
    },
    /// Unsuspend every suspended member
    Activate {
        invoice: String,
        #[command(flatten)]
        common: GroupArgs,
    },
    /// Terminate members (with --since, only those suspended that long; `now` = suspended)
    Delete {
        invoice: String,
        #[arg(long, value_name = "DURATION|now")]
        since: Option<String>,
        #[command(flatten)]
        common: GroupArgs,
    },
    /// Move every member to another client and/or server (created on the target first,
    /// removed from the source only after that succeeded)
    Transfer {
        invoice: String,
        #[arg(long, value_name = "CLIENT_ID", required_unless_present = "server")]
        client: Option<i64>,
        #[arg(long, value_name = "NAME|ID")]
        server: Option<String>,
        #[command(flatten)]
        common: GroupArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct GroupArgs {
    /// Print what each member would undergo; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Leave out the master
    #[arg(long)]
    children_only: bool,
    /// Wait up to N seconds for the members' jobs and show how they ended (per page)
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
    /// Members per request (1 to 10000); the command goes on until the whole group is done
    #[arg(long, value_name = "N", default_value_t = GROUP_PAGE)]
    page_size: u32,
}

fn member_table(members: &[MemberResult]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header([
        "SERVICE", "USERNAME", "ROLE", "STATUS", "ACTION", "OUTCOME", "JOB", "DETAIL",
    ]);
    for m in members {
        t.add_row([
            m.service_id.to_string(),
            m.username.clone(),
            m.role.clone(),
            m.status.clone(),
            m.action.clone(),
            m.outcome.clone(),
            m.job_id.map(|j| j.to_string()).unwrap_or_default(),
            m.detail.clone().unwrap_or_default(),
        ]);
    }
    t.to_string()
}

/// Prints a group answer (`r`, whose members are `members`): its JSON, or the member table.
fn print_members<R: Serialize>(ctx: &Ctx, r: &R, members: &[MemberResult]) -> anyhow::Result<()> {
    if ctx.output == Format::Json {
        return output::print_json(&serde_json::to_value(r)?);
    }
    let failed = members
        .iter()
        .filter(|m| matches!(m.outcome.as_str(), "failed" | "refused"))
        .count();
    output::emit(&member_table(members))?;
    if failed > 0 {
        eprintln!("{failed} member(s) failed or were refused; run the same command again to retry only them");
    }
    Ok(())
}

pub async fn group(cmd: GroupCmd, ctx: &Ctx) -> anyhow::Result<()> {
    let (invoice, op, mut body, common) = match cmd {
        GroupCmd::Show {
            invoice,
            children_only,
            page_size,
        } => {
            let mut shown = GroupMembers {
                invoice: invoice.clone(),
                members: Vec::new(),
                next: None,
            };
            let mut query = MembersQuery {
                children_only,
                limit: Some(page_size),
                after: None,
            };
            loop {
                let page = ctx.api.group_members(&invoice, &query).await?;
                shown.members.extend(page.members);
                match page.next {
                    Some(n) => query.after = Some(n),
                    None => break,
                }
            }
            return print_members(ctx, &shown, &shown.members);
        }
        GroupCmd::Edit {
            invoice,
            set,
            common,
        } => {
            // Settings are the module's own, free-form: a JSON value each, or text.
            let mut settings = Map::new();
            for s in set {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--set {s:?}: expected NAME=VALUE"))?;
                let value =
                    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
                settings.insert(k.to_string(), value);
            }
            let body = GroupRequest {
                settings: Some(settings),
                ..Default::default()
            };
            (invoice, GroupOp::Edit, body, common)
        }
        GroupCmd::Suspend {
            invoice,
            reason,
            common,
        } => {
            let body = GroupRequest {
                reason,
                ..Default::default()
            };
            (invoice, GroupOp::Suspend, body, common)
        }
        GroupCmd::Activate { invoice, common } => {
            (invoice, GroupOp::Activate, GroupRequest::default(), common)
        }
        GroupCmd::Delete {
            invoice,
            since,
            common,
        } => {
            let body = GroupRequest {
                since,
                ..Default::default()
            };
            (invoice, GroupOp::Delete, body, common)
        }
        GroupCmd::Transfer {
            invoice,
            client,
            server,
            common,
        } => {
            let body = GroupRequest {
                client: client.map(RecordRef::Id),
                server: server.as_deref().map(RecordRef::from_segment),
                ..Default::default()
            };
            (invoice, GroupOp::Transfer, body, common)
        }
    };
    body.dry_run = common.dry_run;
    body.children_only = common.children_only;
    // The server may hold each answer while the members' jobs run.
    body.wait = common.wait;
    body.limit = Some(common.page_size);
    // The server acts on a page of members per request: follow `next` so the command
    // still covers the whole group.
    let mut whole: Option<GroupResult> = None;
    loop {
        let page = ctx.api.group_operation(&invoice, op, &body).await?;
        let next = page.next.clone();
        match &mut whole {
            Some(w) => w.members.extend(page.members),
            None => whole = Some(page),
        }
        match next {
            Some(n) => body.after = Some(n),
            None => break,
        }
    }
    let mut whole = whole.expect("at least one page was fetched");
    whole.next = None;
    print_members(ctx, &whole, &whole.members)
}

/// Members per group request.
const GROUP_PAGE: u32 = 1000;

#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// Print what would be terminated; change nothing
    #[arg(long)]
    dry_run: bool,
    /// Suspended at least this long (default: the configured cleanup.terminate_suspended_after)
    #[arg(long, value_name = "DURATION")]
    after: Option<String>,
}

pub async fn cleanup(args: CleanupArgs, ctx: &Ctx) -> anyhow::Result<()> {
    let body = CleanupRequest {
        dry_run: args.dry_run,
        after: args.after,
    };
    let members = ctx.api.cleanup(&body).await?;
    if ctx.output == Format::Json {
        return output::print_json(&serde_json::to_value(&members)?);
    }
    if members.is_empty() {
        return output::emit("no services are suspended that long");
    }
    output::emit(&member_table(&members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_notations_mean_the_same() {
        let want = vec![(
            "service.parent_invoice".to_string(),
            "master-invoice-123".to_string(),
        )];
        assert_eq!(
            parse_filter("[service.parent_invoice:master-invoice-123]").unwrap(),
            want
        );
        assert_eq!(
            parse_filter(r#"["service,parent_invoice":master-invoice-123]"#).unwrap(),
            want
        );
        assert_eq!(
            parse_filter("[service:[parent_invoice:master-invoice-123]]").unwrap(),
            want
        );
        assert_eq!(
            parse_filter("service.parent_invoice=master-invoice-123").unwrap(),
            want
        );
        // The seed's own names.
        assert_eq!(
            parse_filter("[billing.parent_invoice:master-invoice-123]").unwrap(),
            want
        );
        assert_eq!(
            parse_filter("[billing:[parent_invoice:master-invoice-123]]").unwrap(),
            want
        );
    }

    #[test]
    fn several_filters_and_nesting() {
        assert_eq!(
            parse_filter("[service:[status:active, invoice:\"a,b\"], product.name:web]").unwrap(),
            vec![
                ("service.status".into(), "active".into()),
                ("service.invoice".into(), "a,b".into()),
                ("product.name".into(), "web".into()),
            ]
        );
        assert!(parse_filter("[]").unwrap().is_empty());
    }

    #[test]
    fn bad_filters_say_where() {
        for bad in [
            "[service.status]",
            "[service.status:x",
            "[a:b]]",
            "nonsense",
            "[\"open:x]",
        ] {
            let e = parse_filter(bad).unwrap_err().to_string();
            assert!(e.starts_with("filters:"), "{bad}: {e}");
        }
    }

    #[test]
    fn fields_parse_in_every_form() {
        assert_eq!(
            parse_fields("[siteinfo.domain, billing.invoice,\"product,settings,quota\"]").unwrap(),
            [
                "siteinfo.domain",
                "service.invoice",
                "product.settings.quota"
            ]
        );
        assert!(parse_fields("[]").unwrap().is_empty());
    }
}
