//! `scim2ldap check`: reads the config and the mapping, binds to the
//! directory, reads its subschema, and reports every way the mapping and
//! the directory disagree: object classes and attribute types the
//! directory does not define, MUST attributes no rule fills, object
//! classes that cannot share an entry, member attributes the group's
//! classes do not allow, DN parents that do not exist.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use ldap3::{Scope, SearchEntry};

use crate::config::Config;
use crate::mapping::{GroupMapping, Mapping, ResourceMapping};
use crate::model::Model;
use crate::writer::{ApplyError, Directory};

/// What `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// What was checked and found right, in order.
    pub passed: Vec<String>,
    /// Every problem, each naming the file (and line, when known) and key.
    pub problems: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    fn pass(&mut self, s: impl Into<String>) {
        self.passed.push(s.into());
    }
    fn fail(&mut self, s: impl Into<String>) {
        self.problems.push(s.into());
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.passed {
            writeln!(f, "ok       {p}")?;
        }
        for p in &self.problems {
            writeln!(f, "PROBLEM  {p}")?;
        }
        if self.ok() {
            writeln!(f, "all checks passed")
        } else {
            writeln!(f, "{} problem(s)", self.problems.len())
        }
    }
}

/// An object class of the subschema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectClassDef {
    pub names: Vec<String>,
    pub sup: Vec<String>,
    pub kind: ClassKind,
    pub must: Vec<String>,
    pub may: Vec<String>,
}

/// RFC 4512 §4.1.1: an object class without a kind is STRUCTURAL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClassKind {
    Abstract,
    #[default]
    Structural,
    Auxiliary,
}

/// An attribute type of the subschema.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttributeTypeDef {
    pub oid: String,
    pub names: Vec<String>,
    /// The superior type, whose syntax this one inherits when it has none.
    pub sup: Option<String>,
    /// SYNTAX as written: the OID with an optional `{N}` bound
    /// (`crate::syntax::Syntax::parse` reads it).
    pub syntax: Option<String>,
}

/// The parts of a directory's subschema `check` needs, names lowercased.
#[derive(Debug, Default)]
pub struct Schema {
    classes: HashMap<String, ObjectClassDef>,
    /// Every name and OID of an attribute type → its canonical (first) name.
    attributes: HashMap<String, String>,
    /// Each attribute type's syntax (through SUP), to refuse values early.
    syntaxes: crate::syntax::AttributeSyntaxes,
}

impl Schema {
    /// From the `objectClasses` and `attributeTypes` values of a subschema
    /// entry (RFC 4512 §4.1).
    pub fn parse(object_classes: &[String], attribute_types: &[String]) -> Schema {
        let mut s = Schema::default();
        for def in object_classes {
            let oc = parse_object_class(def);
            for n in &oc.names {
                s.classes.insert(n.to_ascii_lowercase(), oc.clone());
            }
        }
        for def in attribute_types {
            let at = parse_attribute_type(def);
            s.syntaxes
                .insert(&at.names, &at.oid, at.sup.as_deref(), at.syntax.as_deref());
            let canon = at.names.first().cloned().unwrap_or_else(|| at.oid.clone());
            for n in at.names.iter().chain(std::iter::once(&at.oid)) {
                s.attributes.insert(n.to_ascii_lowercase(), canon.clone());
            }
        }
        s
    }

    /// The attribute types' syntaxes, for checking values before they are
    /// journaled.
    pub fn syntaxes(&self) -> &crate::syntax::AttributeSyntaxes {
        &self.syntaxes
    }

    pub fn class(&self, name: &str) -> Option<&ObjectClassDef> {
        self.classes.get(&name.to_ascii_lowercase())
    }

    /// The canonical name of an attribute type, if the directory has it.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// A class and its superclasses, the class first.
    fn lineage(&self, class: &str) -> Vec<&ObjectClassDef> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut todo = vec![class.to_string()];
        while let Some(c) = todo.pop() {
            if !seen.insert(c.to_ascii_lowercase()) {
                continue;
            }
            if let Some(def) = self.class(&c) {
                out.push(def);
                todo.extend(def.sup.iter().cloned());
            }
        }
        out
    }

    /// MUST attributes of a class and of its superclasses.
    pub fn all_must(&self, class: &str) -> Vec<String> {
        self.lineage(class)
            .into_iter()
            .flat_map(|d| d.must.iter().cloned())
            .collect()
    }

    /// MAY attributes of a class and of its superclasses.
    pub fn all_may(&self, class: &str) -> Vec<String> {
        self.lineage(class)
            .into_iter()
            .flat_map(|d| d.may.iter().cloned())
            .collect()
    }

    /// Whether `sup` is `class` or one of its superclasses.
    pub fn derives_from(&self, class: &str, sup: &str) -> bool {
        self.lineage(class)
            .iter()
            .any(|d| d.names.iter().any(|n| n.eq_ignore_ascii_case(sup)))
    }

    /// Pairs of STRUCTURAL classes in `classes` that cannot share an entry
    /// (neither derives from the other): RFC 4512 §2.4.2 gives an entry
    /// one structural chain, and OpenLDAP refuses the add. Unknown classes
    /// are reported elsewhere.
    pub fn structural_conflicts<'a>(&self, classes: &'a [String]) -> Vec<(&'a str, &'a str)> {
        let structural: Vec<&str> = classes
            .iter()
            .map(String::as_str)
            .filter(|c| {
                self.class(c)
                    .is_some_and(|d| d.kind == ClassKind::Structural)
            })
            .collect();
        let mut out = Vec::new();
        for (i, a) in structural.iter().enumerate() {
            for b in &structural[i + 1..] {
                if !self.derives_from(a, b) && !self.derives_from(b, a) {
                    out.push((*a, *b));
                }
            }
        }
        out
    }

    /// Whether one of `classes` (or a superclass) lists `attr` as MUST or
    /// MAY, aliases resolved. `extensibleObject` allows anything.
    pub fn allows(&self, classes: &[String], attr: &str) -> bool {
        let canon = |a: &str| self.attribute(a).unwrap_or(a).to_ascii_lowercase();
        let want = canon(attr);
        classes.iter().any(|c| {
            c.eq_ignore_ascii_case("extensibleObject")
                || self
                    .all_must(c)
                    .iter()
                    .chain(self.all_may(c).iter())
                    .any(|a| canon(a) == want)
        })
    }
}

/// Splits an RFC 4512 definition into tokens: `(`, `)`, `$`, quoted
/// strings (without quotes) and bare words.
fn tokens(def: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = def.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '(' | ')' | '$' => {
                out.push(c.to_string());
                chars.next();
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    s.push(c);
                }
                out.push(s);
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '$' | '\'') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    out
}

/// The value of `keyword`: one word, or a parenthesised list separated by
/// `$` or spaces.
fn list_after(toks: &[String], keyword: &str) -> Vec<String> {
    let Some(i) = toks.iter().position(|t| t.eq_ignore_ascii_case(keyword)) else {
        return Vec::new();
    };
    match toks.get(i + 1).map(String::as_str) {
        Some("(") => toks[i + 2..]
            .iter()
            .take_while(|t| *t != ")")
            .filter(|t| *t != "$")
            .cloned()
            .collect(),
        Some(t) => vec![t.to_string()],
        None => Vec::new(),
    }
}

pub fn parse_object_class(def: &str) -> ObjectClassDef {
    let toks = tokens(def);
    let has = |k: &str| toks.iter().any(|t| t.eq_ignore_ascii_case(k));
    let kind = if has("AUXILIARY") {
        ClassKind::Auxiliary
    } else if has("ABSTRACT") {
        ClassKind::Abstract
    } else {
        ClassKind::Structural
    };
    ObjectClassDef {
        names: list_after(&toks, "NAME"),
        sup: list_after(&toks, "SUP"),
        kind,
        must: list_after(&toks, "MUST"),
        may: list_after(&toks, "MAY"),
    }
}

pub fn parse_attribute_type(def: &str) -> AttributeTypeDef {
    let toks = tokens(def);
    AttributeTypeDef {
        oid: toks.get(1).cloned().unwrap_or_default(),
        names: list_after(&toks, "NAME"),
        sup: list_after(&toks, "SUP").into_iter().next(),
        syntax: list_after(&toks, "SYNTAX").into_iter().next(),
    }
}

/// MUST attributes the directory fills itself (Active Directory's system
/// attributes, and `groupType`, which AD defaults to a global security
/// group) or that the writer always sends (objectClass).
const DIRECTORY_FILLED: &[&str] = &[
    "objectClass",
    "instanceType",
    "objectCategory",
    "nTSecurityDescriptor",
    "objectSid",
    "groupType",
];

/// The kind of directory server at the other end, as its root DSE tells
/// it, so that `check` can say when a preset is pointed at the wrong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Microsoft Active Directory or Samba AD DC.
    ActiveDirectory,
    OpenLdap,
    /// 389 Directory Server, and FreeIPA (built on it).
    Ds389,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::ActiveDirectory => "Active Directory (or Samba AD)",
            ServerKind::OpenLdap => "OpenLDAP",
            ServerKind::Ds389 => "389 Directory Server (or FreeIPA)",
        }
    }

    /// The shipped presets written for this kind.
    pub fn presets(self) -> &'static str {
        match self {
            ServerKind::ActiveDirectory => "examples/ad.toml",
            ServerKind::OpenLdap => {
                "examples/openldap.toml (or openldap-posix.toml, openldap-rfc2307bis.toml)"
            }
            ServerKind::Ds389 => "examples/389ds.toml (or freeipa.toml)",
        }
    }

    /// The stable-id attribute that works on this kind.
    pub fn uuid_attribute(self) -> &'static str {
        match self {
            ServerKind::ActiveDirectory => "objectGUID",
            ServerKind::OpenLdap => "entryUUID",
            ServerKind::Ds389 => "nsUniqueId (ipaUniqueID on FreeIPA)",
        }
    }
}

/// The root DSE attributes `check` reads to tell the server's kind.
pub const ROOT_DSE_ATTRIBUTES: &[&str] = &[
    "objectClass",
    "structuralObjectClass",
    "vendorName",
    "vendorVersion",
    "supportedCapabilities",
    "configContext",
    "forestFunctionality",
    "dsServiceName",
    "netscapemdsuffix",
];

/// Active Directory's capability OIDs (LDAP_CAP_ACTIVE_DIRECTORY_OID and
/// its _V51 and _LDAP_INTEG siblings); Samba AD announces them too.
const AD_CAPABILITIES: &[&str] = &[
    "1.2.840.113556.1.4.800",
    "1.2.840.113556.1.4.1670",
    "1.2.840.113556.1.4.1791",
];

/// The kind of server a root DSE belongs to (attribute names compared
/// case-insensitively), with the evidence in words; `None` when nothing
/// in it is telling.
pub fn detect_server(root: &HashMap<String, Vec<String>>) -> Option<(ServerKind, String)> {
    let get = |name: &str| -> &[String] {
        root.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or(&[], |(_, v)| v.as_slice())
    };
    let has = |name: &str, want: &str| get(name).iter().any(|v| v.eq_ignore_ascii_case(want));
    if let Some(cap) = AD_CAPABILITIES
        .iter()
        .find(|c| has("supportedCapabilities", c))
    {
        return Some((
            ServerKind::ActiveDirectory,
            format!("its root DSE lists the Active Directory capability {cap}"),
        ));
    }
    if !get("forestFunctionality").is_empty() || !get("dsServiceName").is_empty() {
        return Some((
            ServerKind::ActiveDirectory,
            "its root DSE has forestFunctionality / dsServiceName".into(),
        ));
    }
    if has("objectClass", "OpenLDAProotDSE") || has("structuralObjectClass", "OpenLDAProotDSE") {
        return Some((
            ServerKind::OpenLdap,
            "its root DSE is an OpenLDAProotDSE".into(),
        ));
    }
    let vendor = get("vendorName")
        .iter()
        .chain(get("vendorVersion"))
        .find(|v| {
            let v = v.to_ascii_lowercase();
            ["389", "fedora", "red hat", "netscape", "freeipa"]
                .iter()
                .any(|w| v.contains(w))
        });
    if let Some(v) = vendor {
        return Some((
            ServerKind::Ds389,
            format!("its root DSE names the vendor {v:?}"),
        ));
    }
    if !get("netscapemdsuffix").is_empty() {
        return Some((
            ServerKind::Ds389,
            "its root DSE has netscapemdsuffix".into(),
        ));
    }
    None
}

/// The kind of server a mapping (and the config's uuid_attribute) is
/// written for, with the evidence; `None` when nothing in it is telling.
/// Each kind counts its marks; the most wins, ties tell nothing.
pub fn mapping_kind(m: &Mapping, uuid_attribute: &str) -> Option<(ServerKind, String)> {
    let mut marks: Vec<(ServerKind, String)> = Vec::new();
    let classes = |r: &ResourceMapping| -> Vec<String> {
        r.object_classes()
            .iter()
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let user_classes = classes(&m.user);
    if user_classes.iter().any(|c| c == "user") {
        marks.push((
            ServerKind::ActiveDirectory,
            "the user object class \"user\"".into(),
        ));
    }
    if let Some(g) = &m.group {
        if classes(&g.resource).iter().any(|c| c == "group") {
            marks.push((
                ServerKind::ActiveDirectory,
                "the group object class \"group\"".into(),
            ));
        }
    }
    for a in ["sAMAccountName", "userPrincipalName", "unicodePwd"] {
        if m.user.rule(a).is_some() {
            marks.push((ServerKind::ActiveDirectory, format!("a rule for {a}")));
        }
    }
    let deactivate = &m.user_policy.deactivate;
    if deactivate.ad_user_account_control {
        marks.push((
            ServerKind::ActiveDirectory,
            "ad_user_account_control".into(),
        ));
    }
    let sets = |a: &str| deactivate.set.keys().any(|k| k.eq_ignore_ascii_case(a));
    if sets("nsAccountLock") {
        marks.push((ServerKind::Ds389, "deactivation by nsAccountLock".into()));
    }
    if sets("pwdAccountLockedTime") {
        marks.push((
            ServerKind::OpenLdap,
            "deactivation by pwdAccountLockedTime (OpenLDAP's ppolicy)".into(),
        ));
    }
    let uuid = uuid_attribute.to_ascii_lowercase();
    match uuid.as_str() {
        "objectguid" => marks.push((
            ServerKind::ActiveDirectory,
            "uuid_attribute objectGUID".into(),
        )),
        "nsuniqueid" | "ipauniqueid" => marks.push((
            ServerKind::Ds389,
            format!("uuid_attribute {uuid_attribute}"),
        )),
        _ => {}
    }
    let count = |k: ServerKind| marks.iter().filter(|(x, _)| *x == k).count();
    let kinds = [
        ServerKind::ActiveDirectory,
        ServerKind::OpenLdap,
        ServerKind::Ds389,
    ];
    let best = kinds.iter().copied().max_by_key(|k| count(*k))?;
    let n = count(best);
    if n == 0 || kinds.iter().any(|k| *k != best && count(*k) == n) {
        return None;
    }
    let why: Vec<&str> = marks
        .iter()
        .filter(|(k, _)| *k == best)
        .map(|(_, w)| w.as_str())
        .collect();
    Some((best, why.join(", ")))
}

/// The problem when the mapping is written for another kind of server
/// than the one it is pointed at; `None` when they agree or either is
/// unknown.
pub fn wrong_pairing(
    server: Option<&(ServerKind, String)>,
    mapping: Option<&(ServerKind, String)>,
    mapping_file: &str,
) -> Option<String> {
    let ((server, seen), (meant, marks)) = (server?, mapping?);
    if server == meant {
        return None;
    }
    Some(format!(
        "{mapping_file}: this mapping is written for {} ({marks}), but the directory is {} ({seen}): start from {} instead",
        meant.name(),
        server.name(),
        server.presets()
    ))
}

/// Reads the root DSE attributes that tell the server's kind.
async fn read_root_dse(ldap: &mut ldap3::Ldap) -> Result<HashMap<String, Vec<String>>, String> {
    let (entries, _) = ldap
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            ROOT_DSE_ATTRIBUTES.to_vec(),
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("reading the root DSE: {e}"))?;
    Ok(entries
        .into_iter()
        .next()
        .map(|e| SearchEntry::construct(e).attrs)
        .unwrap_or_default())
}

/// `file:line` of the first line of the mapping, inside `[section]` or
/// its subtables, that mentions `word` as a key (`word =`) or as a quoted
/// value; the file alone if none does.
fn locate(file: &str, text: &str, section: &str, word: &str) -> String {
    let quoted = [format!("\"{word}\""), format!("'{word}'")];
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.starts_with('#') {
            continue;
        }
        if let Some(h) = l.strip_prefix('[') {
            current = h.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            continue;
        }
        let inside = current == section || current.starts_with(&format!("{section}."));
        if !inside {
            continue;
        }
        let key = l
            .strip_prefix(word)
            .is_some_and(|r| r.trim_start().starts_with('='));
        if key || quoted.iter().any(|q| l.contains(q.as_str())) {
            return format!("{file}:{}", i + 1);
        }
    }
    file.to_string()
}

/// Runs every check for the config file at `path`.
pub async fn run(path: &Path) -> Report {
    let mut r = Report::default();
    let config = match Config::load(path) {
        Ok(c) => {
            r.pass(format!("{}: config is valid", path.display()));
            c
        }
        Err(e) => {
            r.fail(e.0);
            return r;
        }
    };
    let model = match Model::load(&config.mapping_file) {
        Ok(m) => {
            r.pass(format!(
                "{}: mapping is valid",
                config.mapping_file.display()
            ));
            m
        }
        Err(e) => {
            for line in e.to_string().lines().filter(|l| !l.trim().is_empty()) {
                r.fail(line.to_string());
            }
            return r;
        }
    };
    let mapping_file = config.mapping_file.display().to_string();
    let mapping_text = std::fs::read_to_string(&config.mapping_file).unwrap_or_default();
    if let Some(tls) = &config.server.tls {
        match crate::tls::server_config(tls) {
            Ok(_) => r.pass(format!(
                "{}: HTTPS certificate and key load",
                tls.cert.display()
            )),
            Err(e) => r.fail(format!(
                "{}: server.tls_cert / tls_key: {e}",
                config.file.display()
            )),
        }
    }

    let mut dir = Directory::new(config.ldap.clone());
    let ldap = match dir.conn().await {
        Ok(l) => l,
        Err(e) => {
            let m = e.message();
            r.fail(format!(
                "{}: [ldap] url / bind_dn: {m}",
                config.file.display()
            ));
            return r;
        }
    };
    r.pass(format!(
        "bound to {} as {}",
        config.ldap.url,
        if config.ldap.bind_dn.is_empty() {
            "anonymous"
        } else {
            &config.ldap.bind_dn
        }
    ));

    let schema = match read_schema(ldap).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(format!(
                "{}: cannot read the subschema: {e}",
                config.ldap.url
            ));
            return r;
        }
    };
    r.pass("read the directory's subschema");

    // The kind of server, and whether the mapping was written for it.
    let server = match dir.conn().await {
        Ok(ldap) => match read_root_dse(ldap).await {
            Ok(root) => detect_server(&root),
            Err(e) => {
                r.fail(format!("{}: {e}", config.ldap.url));
                None
            }
        },
        Err(e) => {
            r.fail(format!("{}: {}", config.ldap.url, e.message()));
            None
        }
    };
    let meant = mapping_kind(&model.mapping, &config.ldap.uuid_attribute);
    match wrong_pairing(server.as_ref(), meant.as_ref(), &mapping_file) {
        Some(problem) => r.fail(problem),
        None => match &server {
            Some((kind, seen)) => r.pass(format!("the directory is {} ({seen})", kind.name())),
            None => r.pass("the directory's kind is not one scim2ldap knows by its root DSE"),
        },
    }
    match schema.attribute(&config.ldap.uuid_attribute) {
        Some(_) => r.pass(format!(
            "[ldap] uuid_attribute: the directory has {}",
            config.ldap.uuid_attribute
        )),
        None => r.fail(format!(
            "{}: [ldap] uuid_attribute: the directory has no attribute type {:?}, so entries could not be linked by a stable id{}",
            config.file.display(),
            config.ldap.uuid_attribute,
            match &server {
                Some((kind, _)) => format!("; on {} use {}", kind.name(), kind.uuid_attribute()),
                None => String::new(),
            }
        )),
    }

    let at = |section: &str, word: &str| locate(&mapping_file, &mapping_text, section, word);
    let mut sections: Vec<(&str, &ResourceMapping, Vec<String>)> =
        vec![("user", &model.mapping.user, user_attributes(&model.mapping))];
    if let Some(g) = &model.mapping.group {
        sections.push((
            "group",
            &g.resource,
            g.managed_attributes()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ));
    }

    for (section, res, attrs) in &sections {
        let mut class_ok = true;
        for oc in res.object_classes() {
            if schema.class(oc).is_none() {
                class_ok = false;
                r.fail(format!(
                    "{}: [{section}] object_classes: the directory has no object class {oc:?}",
                    at(section, oc)
                ));
            }
        }
        if class_ok {
            r.pass(format!("[{section}] object classes exist"));
        }
        let conflicts = schema.structural_conflicts(res.object_classes());
        for (a, b) in &conflicts {
            r.fail(format!(
                "{}: [{section}] object_classes: {a:?} and {b:?} are both STRUCTURAL in this directory's schema and neither derives from the other, so no entry can have both (for groupOfNames + posixGroup, the directory needs the rfc2307bis schema, where posixGroup is AUXILIARY)",
                at(section, b)
            ));
        }
        if class_ok && conflicts.is_empty() {
            r.pass(format!("[{section}] object classes can share an entry"));
        }
        let mut attrs_ok = true;
        for a in attrs {
            if schema.attribute(a).is_none() {
                attrs_ok = false;
                r.fail(format!(
                    "{}: [{section}] {a}: the directory has no attribute type {a:?}",
                    at(section, a)
                ));
            }
        }
        if attrs_ok {
            r.pass(format!("[{section}] mapped attributes exist"));
        }
        // MUST attributes: filled when a rule (or the RDN, or the group's
        // member attribute) writes the same attribute type, alias included.
        let filled: HashSet<String> = attrs
            .iter()
            .chain(std::iter::once(&res.rdn_attribute().to_string()))
            .map(|a| schema.attribute(a).unwrap_or(a).to_ascii_lowercase())
            .collect();
        let mut must_ok = true;
        let mut reported = HashSet::new();
        for oc in res.object_classes() {
            for must in schema.all_must(oc) {
                let canon = schema.attribute(&must).unwrap_or(&must).to_string();
                if DIRECTORY_FILLED
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&canon))
                    || filled.contains(&canon.to_ascii_lowercase())
                    || !reported.insert(canon.to_ascii_lowercase())
                {
                    continue;
                }
                must_ok = false;
                r.fail(format!(
                    "{}: [{section}.attributes]: object class {oc:?} requires {canon:?} (MUST) but no rule fills it; add a rule, with fallbacks and required = true",
                    at(section, oc)
                ));
            }
        }
        if must_ok {
            r.pass(format!("[{section}] every MUST attribute has a rule"));
        }
        let mut parents = vec![("dn", res.parent_dn().to_string())];
        if *section == "user" {
            if let Some(to) = &model.mapping.user_policy.deactivate.move_to {
                parents.push(("deactivate.move_to", to.clone()));
            }
        }
        if *section == "group" {
            if let Some(g) = &model.mapping.group {
                check_member_attributes(&mut r, &schema, g, &at);
            }
        }
        for (key, parent) in parents {
            match entry_exists(dir.conn().await, &parent).await {
                Ok(true) => r.pass(format!("[{section}] {key}: {parent} exists")),
                Ok(false) => r.fail(format!(
                    "{}: [{section}] {key}: the parent entry {parent:?} does not exist in the directory",
                    match key.split_once('.') {
                        Some((sub, k)) => at(&format!("{section}.{sub}"), k),
                        None => at(section, key),
                    }
                )),
                Err(e) => r.fail(format!(
                    "{}: [{section}] {key}: cannot read {parent:?}: {e}",
                    mapping_file
                )),
            }
        }
        match dir.conn().await {
            Ok(ldap) => adoption_census(&mut r, ldap, section, res, &at).await,
            Err(e) => r.fail(format!("[{section}.adopt]: {}", e.message())),
        }
    }
    r
}

/// `[<section>.adopt]`: how many entries that exist now the policy would
/// let the identity provider take over, and how many it protects. Runs the
/// policy's filters once, so the directory checks their syntax.
async fn adoption_census(
    r: &mut Report,
    ldap: &mut ldap3::Ldap,
    section: &str,
    res: &ResourceMapping,
    at: &dyn Fn(&str, &str) -> String,
) {
    use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
    let policy = res.adopt_policy();
    let class = format!(
        "(objectClass={})",
        crate::dn::escape_filter_value(res.search_class())
    );
    let table = format!("{section}.adopt");
    // Counted under the subtrees the policy names, or the DN template's
    // parent when adoption is off.
    let bases = if policy.enabled {
        policy.under.clone()
    } else {
        vec![res.parent_dn().to_string()]
    };
    let filter = if policy.enabled {
        policy.narrow(&class)
    } else {
        class
    };
    let (mut allowed, mut protected) = (0usize, 0usize);
    for base in &bases {
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(500)),
        ];
        let mut stream = match ldap
            .streaming_search_with(adapters, base, Scope::Subtree, &filter, vec!["1.1"])
            .await
        {
            Ok(s) => s,
            Err(e) => {
                r.fail(format!(
                    "{}: [{table}] searching {base} with {filter}: {e}",
                    at(&table, "under")
                ));
                return;
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(e)) => {
                    let e = SearchEntry::construct(e);
                    if policy.enabled && policy.check_dn(&e.dn).is_ok() {
                        allowed += 1;
                    } else {
                        protected += 1;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    r.fail(format!(
                        "{}: [{table}] reading {base}: {e}",
                        at(&table, "under")
                    ));
                    return;
                }
            }
        }
        let res = stream.finish().await;
        if res.rc != 0 && res.rc != 32 {
            r.fail(format!(
                "{}: [{table}] searching {base} with {filter}: {} ({}) {}",
                at(&table, "filter"),
                crate::writer::rc_name(res.rc),
                res.rc,
                res.text
            ));
            return;
        }
    }
    if policy.enabled {
        r.pass(format!(
            "[{table}] {allowed} existing entries under {} may be adopted (their mapped attributes then follow the identity provider); {protected} protected by `never`",
            bases.join("; ")
        ));
    } else {
        r.pass(format!(
            "[{table}] adoption is off: {protected} existing entries under {} are never taken over (a resource with one of their names parks until you allow it)",
            bases.join("; ")
        ));
    }
}

/// The group's member attributes (`[group.members]` and its `also`): each
/// must be allowed by the group's object classes, and one they require must
/// keep a value in an empty group (the table's attribute, with a
/// placeholder; an `also` one is removed while it has no values).
fn check_member_attributes(
    r: &mut Report,
    schema: &Schema,
    g: &GroupMapping,
    at: &dyn Fn(&str, &str) -> String,
) {
    let classes = g.resource.object_classes();
    let mut ok = true;
    for (i, m) in g.members.attributes().into_iter().enumerate() {
        let name = m.attribute;
        if schema.attribute(name).is_none() {
            // Reported with the other unknown attributes.
            ok = false;
            continue;
        }
        if !schema.allows(classes, name) {
            ok = false;
            r.fail(format!(
                "{}: [group.members] {name}: none of the group's object classes {classes:?} allows {name:?} (MUST or MAY); the directory would refuse the group entries",
                at("group.members", name)
            ));
            continue;
        }
        let canon = schema.attribute(name).unwrap_or(name).to_ascii_lowercase();
        let required_by = classes.iter().find(|c| {
            schema
                .all_must(c)
                .iter()
                .any(|a| schema.attribute(a).unwrap_or(a).to_ascii_lowercase() == canon)
        });
        match required_by {
            Some(oc) if i > 0 => {
                ok = false;
                r.fail(format!(
                    "{}: [group.members] also {name}: object class {oc:?} requires it (MUST), but an also attribute is removed while the group has no values for it; make it the table's attribute with empty = {{ placeholder = ... }}",
                    at("group.members", name)
                ));
            }
            Some(oc) if m.placeholder.is_none() => {
                ok = false;
                r.fail(format!(
                    "{}: [group.members] empty: object class {oc:?} requires {name} (MUST), so an empty group cannot drop it; use empty = {{ placeholder = \"<dn>\" }}",
                    at("group.members", "empty")
                ));
            }
            _ => {}
        }
    }
    if ok {
        r.pass("[group.members] the group's object classes allow every member attribute");
    }
}

/// Every attribute the user mapping writes: rules, id attribute and the
/// deactivation policy's attributes.
fn user_attributes(m: &Mapping) -> Vec<String> {
    let mut v: Vec<String> = m
        .user
        .managed_attributes()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for a in m.user_policy.deactivate.attributes() {
        if !v.iter().any(|x| x.eq_ignore_ascii_case(a)) {
            v.push(a.to_string());
        }
    }
    v
}

/// Reads the directory's subschema (RFC 4512 §4.2) over `ldap`.
pub async fn read_schema(ldap: &mut ldap3::Ldap) -> Result<Schema, String> {
    let (root, _) = ldap
        .search(
            "",
            Scope::Base,
            "(objectClass=*)",
            vec!["subschemaSubentry"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("reading the root DSE: {e}"))?;
    let dn = root
        .into_iter()
        .next()
        .map(SearchEntry::construct)
        .and_then(|e| {
            e.attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("subschemaSubentry"))
                .and_then(|(_, v)| v.first().cloned())
        })
        .unwrap_or_else(|| "cn=Subschema".to_string());
    let (entries, _) = ldap
        .search(
            &dn,
            Scope::Base,
            "(objectClass=subschema)",
            vec!["objectClasses", "attributeTypes"],
        )
        .await
        .and_then(|r| r.success())
        .map_err(|e| format!("reading {dn}: {e}"))?;
    let entry = entries
        .into_iter()
        .next()
        .map(SearchEntry::construct)
        .ok_or_else(|| format!("{dn} returned nothing (is the bind DN allowed to read it?)"))?;
    let get = |name: &str| {
        entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let schema = Schema::parse(&get("objectClasses"), &get("attributeTypes"));
    if schema.classes.is_empty() {
        return Err(format!("{dn} lists no objectClasses"));
    }
    Ok(schema)
}

async fn entry_exists(
    conn: Result<&mut ldap3::Ldap, ApplyError>,
    dn: &str,
) -> Result<bool, String> {
    let ldap = conn.map_err(|e| format!("{e:?}"))?;
    match ldap
        .search(dn, Scope::Base, "(objectClass=*)", vec!["1.1"])
        .await
        .and_then(|r| r.success())
    {
        Ok((entries, _)) => Ok(!entries.is_empty()),
        Err(ldap3::LdapError::LdapResult { result }) if result.rc == 32 => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc4512_definitions() {
        let oc = parse_object_class(
            "( 2.5.6.6 NAME 'person' DESC 'RFC2256: a person' SUP top STRUCTURAL MUST ( sn $ cn ) MAY ( userPassword $ telephoneNumber ) )",
        );
        assert_eq!(oc.names, vec!["person"]);
        assert_eq!(oc.sup, vec!["top"]);
        assert_eq!(oc.must, vec!["sn", "cn"]);
        assert_eq!(oc.may, vec!["userPassword", "telephoneNumber"]);
        let at = parse_attribute_type(
            "( 2.5.4.3 NAME ( 'cn' 'commonName' ) DESC 'RFC4519: common name(s)' SUP name )",
        );
        assert_eq!(at.oid, "2.5.4.3");
        assert_eq!(at.names, vec!["cn", "commonName"]);
        assert_eq!(at.sup.as_deref(), Some("name"));
        assert_eq!(at.syntax, None);
        let at = parse_attribute_type(
            "( 0.9.2342.19200300.100.1.3 NAME ( 'mail' 'rfc822Mailbox' ) DESC 'RFC1274: RFC822 Mailbox' EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.26{256} )",
        );
        assert_eq!(at.sup, None);
        assert_eq!(
            at.syntax.as_deref(),
            Some("1.3.6.1.4.1.1466.115.121.1.26{256}")
        );
        // Active Directory quotes the OID.
        let at = parse_attribute_type(
            "( 1.2.840.113556.1.4.221 NAME 'sAMAccountName' SYNTAX '1.3.6.1.4.1.1466.115.121.1.15' SINGLE-VALUE )",
        );
        assert_eq!(at.syntax.as_deref(), Some("1.3.6.1.4.1.1466.115.121.1.15"));
    }

    #[test]
    fn must_attributes_are_inherited_and_aliases_resolve() {
        let s = Schema::parse(
            &[
                "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )".into(),
                "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) )".into(),
                "( 9.9 NAME 'employee' SUP person STRUCTURAL MUST employeeNumber )".into(),
            ],
            &["( 2.5.4.3 NAME ( 'cn' 'commonName' ) )".into()],
        );
        let mut must = s.all_must("Employee");
        must.sort();
        assert_eq!(must, vec!["cn", "employeeNumber", "objectClass", "sn"]);
        assert_eq!(s.attribute("commonName"), Some("cn"));
        assert_eq!(s.attribute("2.5.4.3"), Some("cn"));
        assert!(s.attribute("nope").is_none());
    }

    #[test]
    fn structural_chains_and_allowed_attributes() {
        let classes = |posix_group: &str| {
            vec![
                "( 2.5.6.0 NAME 'top' ABSTRACT MUST objectClass )".to_string(),
                "( 2.5.6.9 NAME 'groupOfNames' SUP top STRUCTURAL MUST ( member $ cn ) MAY description )".into(),
                format!("( 1.3.6.1.1.1.2.2 NAME 'posixGroup' DESC 'Abstraction of a group of accounts' SUP top {posix_group} MUST ( cn $ gidNumber ) MAY ( userPassword $ memberUid $ description ) )"),
                "( 2.5.6.6 NAME 'person' SUP top STRUCTURAL MUST ( sn $ cn ) )".into(),
                "( 2.5.6.7 NAME 'organizationalPerson' SUP person STRUCTURAL )".into(),
                "( 1.3.6.1.1.1.2.0 NAME 'posixAccount' SUP top AUXILIARY MUST uid )".into(),
                "( 9.9.9 NAME 'noKind' SUP top MAY description )".into(),
            ]
        };
        let attrs = [
            "( 2.5.4.31 NAME 'member' )".to_string(),
            "( 1.3.6.1.1.1.1.12 NAME 'memberUid' )".into(),
        ];
        let s = Schema::parse(&classes("STRUCTURAL"), &attrs);
        assert_eq!(s.class("top").unwrap().kind, ClassKind::Abstract);
        assert_eq!(s.class("posixAccount").unwrap().kind, ClassKind::Auxiliary);
        assert_eq!(s.class("noKind").unwrap().kind, ClassKind::Structural);
        let group: Vec<String> = ["top", "groupOfNames", "posixGroup"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            s.structural_conflicts(&group),
            vec![("groupOfNames", "posixGroup")]
        );
        let user: Vec<String> = ["top", "person", "organizationalPerson", "posixAccount"]
            .map(String::from)
            .to_vec();
        assert!(s.structural_conflicts(&user).is_empty(), "one chain");

        let bis = Schema::parse(&classes("AUXILIARY"), &attrs);
        assert!(bis.structural_conflicts(&group).is_empty());
        assert!(bis.allows(&group, "MEMBERUID") && bis.allows(&group, "member"));
        let only_names = ["top".to_string(), "groupOfNames".to_string()];
        assert!(!bis.allows(&only_names, "memberUid"));
        assert!(bis.allows(&["extensibleObject".to_string()], "memberUid"));
    }

    fn root(pairs: &[(&str, &[&str])]) -> HashMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    /// Root DSEs as the real servers answer `ROOT_DSE_ATTRIBUTES`
    /// (captured from slapd 2.5.13, 389-ds 2.3.1 and Samba AD DC 4.17.12).
    fn slapd_root() -> HashMap<String, Vec<String>> {
        root(&[
            ("objectClass", &["top", "OpenLDAProotDSE"]),
            ("structuralObjectClass", &["OpenLDAProotDSE"]),
            ("configContext", &["cn=config"]),
        ])
    }
    fn ds389_root() -> HashMap<String, Vec<String>> {
        root(&[
            ("objectClass", &["top"]),
            ("vendorName", &["389 Project"]),
            ("vendorVersion", &["389-Directory/2.3.1 B2025.016.1616"]),
            ("netscapemdsuffix", &["cn=ldap://dc=localhost:3994"]),
        ])
    }
    fn samba_root() -> HashMap<String, Vec<String>> {
        root(&[
            (
                "supportedCapabilities",
                &[
                    "1.2.840.113556.1.4.800",
                    "1.2.840.113556.1.4.1670",
                    "1.2.840.113556.1.4.1791",
                    "1.2.840.113556.1.4.1935",
                    "1.2.840.113556.1.4.2080",
                ],
            ),
            ("vendorName", &["Samba Team (https://www.samba.org)"]),
            ("vendorVersion", &["4.17.12-Debian"]),
            ("forestFunctionality", &["4"]),
            (
                "dsServiceName",
                &["CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=example,DC=com"],
            ),
        ])
    }

    #[test]
    fn the_server_kind_is_told_by_its_root_dse() {
        let kind = |r: &HashMap<String, Vec<String>>| detect_server(r).map(|(k, _)| k);
        assert_eq!(kind(&slapd_root()), Some(ServerKind::OpenLdap));
        assert_eq!(kind(&ds389_root()), Some(ServerKind::Ds389));
        assert_eq!(kind(&samba_root()), Some(ServerKind::ActiveDirectory));
        // Windows AD: capabilities without a vendor.
        let ad = root(&[("SUPPORTEDCAPABILITIES", &["1.2.840.113556.1.4.800"])]);
        assert_eq!(kind(&ad), Some(ServerKind::ActiveDirectory));
        // slapd.conf without cn=config, asked for fewer attributes.
        let bare = root(&[("objectclass", &["top", "openldaprootdse"])]);
        assert_eq!(kind(&bare), Some(ServerKind::OpenLdap));
        let rh = root(&[("vendorVersion", &["Red Hat-Directory/11.5"])]);
        assert_eq!(kind(&rh), Some(ServerKind::Ds389));
        // Nothing telling: no verdict.
        assert_eq!(kind(&root(&[("objectClass", &["top"])])), None);
        assert_eq!(kind(&HashMap::new()), None);
    }

    fn preset(name: &str) -> Mapping {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        Mapping::parse(&text, name).unwrap()
    }

    #[test]
    fn every_preset_says_which_server_it_is_for() {
        for (name, uuid, kind) in [
            ("ad.toml", "objectGUID", ServerKind::ActiveDirectory),
            ("openldap.toml", "entryUUID", ServerKind::OpenLdap),
            ("openldap-posix.toml", "entryUUID", ServerKind::OpenLdap),
            (
                "openldap-rfc2307bis.toml",
                "entryUUID",
                ServerKind::OpenLdap,
            ),
            ("389ds.toml", "entryUUID", ServerKind::Ds389),
            ("freeipa.toml", "ipaUniqueID", ServerKind::Ds389),
            ("freeipa.toml", "nsUniqueId", ServerKind::Ds389),
        ] {
            let got = mapping_kind(&preset(name), uuid);
            assert_eq!(got.as_ref().map(|(k, _)| *k), Some(kind), "{name}: {got:?}");
        }
        // The AD preset stays AD even with the default uuid_attribute.
        let (k, why) = mapping_kind(&preset("ad.toml"), "entryUUID").unwrap();
        assert_eq!(k, ServerKind::ActiveDirectory);
        assert!(why.contains("sAMAccountName"), "{why}");
    }

    #[test]
    fn a_wrong_pairing_names_the_preset_to_use() {
        let pairs = [
            (
                "ad.toml",
                "objectGUID",
                slapd_root(),
                "examples/openldap.toml",
            ),
            ("ad.toml", "objectGUID", ds389_root(), "examples/389ds.toml"),
            (
                "openldap.toml",
                "entryUUID",
                samba_root(),
                "examples/ad.toml",
            ),
            (
                "openldap.toml",
                "entryUUID",
                ds389_root(),
                "examples/389ds.toml",
            ),
            (
                "389ds.toml",
                "entryUUID",
                slapd_root(),
                "examples/openldap.toml",
            ),
            (
                "freeipa.toml",
                "ipaUniqueID",
                samba_root(),
                "examples/ad.toml",
            ),
        ];
        for (name, uuid, root, want) in pairs {
            let server = detect_server(&root);
            let meant = mapping_kind(&preset(name), uuid);
            let p = wrong_pairing(server.as_ref(), meant.as_ref(), name)
                .unwrap_or_else(|| panic!("{name} passed"));
            assert!(
                p.starts_with(&format!("{name}: this mapping is written for ")),
                "{p}"
            );
            assert!(p.contains(&format!("start from {want}")), "{p}");
        }
        for (name, uuid, root) in [
            ("ad.toml", "objectGUID", samba_root()),
            ("openldap.toml", "entryUUID", slapd_root()),
            ("389ds.toml", "entryUUID", ds389_root()),
            ("freeipa.toml", "nsUniqueId", ds389_root()),
        ] {
            let server = detect_server(&root);
            let meant = mapping_kind(&preset(name), uuid);
            assert_eq!(
                wrong_pairing(server.as_ref(), meant.as_ref(), name),
                None,
                "{name}"
            );
        }
        // An unknown server or a mapping without marks: no verdict.
        let meant = mapping_kind(&preset("ad.toml"), "objectGUID");
        assert_eq!(wrong_pairing(None, meant.as_ref(), "m"), None);
    }

    #[test]
    fn locate_finds_keys_and_quoted_values() {
        let text = "[user]\n# cn = x\nobject_classes = [\"top\", \"person\"]\n[user.attributes]\ncn = \"displayName\"\n[group]\ncn = \"displayName\"\n";
        assert_eq!(locate("m.toml", text, "user", "cn"), "m.toml:5");
        assert_eq!(locate("m.toml", text, "group", "cn"), "m.toml:7");
        assert_eq!(locate("m.toml", text, "user", "person"), "m.toml:3");
        assert_eq!(locate("m.toml", text, "user", "zz"), "m.toml");
    }
}
