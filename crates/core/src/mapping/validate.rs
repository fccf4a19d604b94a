//! Raw file → validated [`Mapping`]. Every check reports the line of the
//! key or value at fault and goes on, so one run lists every problem.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::error::{from_toml, MappingError, Problems};
use super::paths::ScimPath;
use super::raw::{OneOrMany, RawAdopt, RawEmpty, RawFile, RawRule, Str};
use super::template::{parse_source, parse_template, Segment, Source, Transform};
use super::{
    AdoptPolicy, AttributeRule, DeactivatePolicy, DeleteAction, EmptyGroup, ExtensionAttribute,
    ExtensionDecl, GroupMapping, Mapping, MemberAttribute, Members, Reference, ResourceKind,
    ResourceMapping, UserPolicy,
};
use crate::dn::{dn_to_string, is_attribute_description, is_descriptor, parse_dn};
use crate::scim::schema::{
    AttrType, SchemaRegistry, CORE_GROUP_URN, CORE_USER_URN, ENTERPRISE_USER_URN,
};

pub(crate) fn parse(text: &str, file: &str) -> Result<Mapping, MappingError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| from_toml(text, file, e))?;
    let mut p = Problems::new(text, file);

    let extensions = extensions(&mut p, &raw.extension);
    let schemas = |kind| {
        extensions
            .iter()
            .filter(|e: &&ExtensionDecl| e.resource == kind)
            .map(ExtensionDecl::to_schema)
            .collect()
    };
    let user_reg = SchemaRegistry::users(schemas(ResourceKind::User));
    let group_reg = SchemaRegistry::groups(schemas(ResourceKind::Group));

    let u = raw.user.get_ref();
    let mut user = resource(
        &mut p,
        "user",
        ResourceKind::User,
        Parts {
            dn: &u.dn,
            object_classes: &u.object_classes,
            id_attribute: u.id_attribute.as_ref(),
            attributes: &u.attributes,
            adopt: u.adopt.as_ref(),
        },
        user_reg,
    );
    let password = super::password::parse(&mut p, u, user.as_mut());
    let policy = user_policy(&mut p, &raw, user.as_ref());
    let group = raw.group.as_ref().map(|g| {
        let span = g.span();
        let g = g.get_ref();
        let resource = resource(
            &mut p,
            "group",
            ResourceKind::Group,
            Parts {
                dn: &g.dn,
                object_classes: &g.object_classes,
                id_attribute: g.id_attribute.as_ref(),
                attributes: &g.attributes,
                adopt: g.adopt.as_ref(),
            },
            group_reg,
        );
        let members = members(&mut p, g, resource.as_ref(), user.as_ref());
        (span, resource, members)
    });

    if !p.is_empty() {
        return Err(p.into_error());
    }
    let group = match group {
        None => None,
        Some((_, Some(resource), Some(members))) => Some(GroupMapping { resource, members }),
        Some((span, _, _)) => {
            p.add(span, "group", "invalid group mapping");
            return Err(p.into_error());
        }
    };
    match (user, policy) {
        (Some(user), Some(user_policy)) => Ok(Mapping {
            user,
            user_policy,
            group,
            extensions,
            password,
        }),
        _ => {
            p.add(raw.user.span(), "user", "invalid user mapping");
            Err(p.into_error())
        }
    }
}

struct Parts<'a> {
    dn: &'a Str,
    object_classes: &'a Spanned<Vec<Str>>,
    id_attribute: Option<&'a Str>,
    attributes: &'a Spanned<BTreeMap<Str, Spanned<RawRule>>>,
    adopt: Option<&'a Spanned<RawAdopt>>,
}

fn resource(
    p: &mut Problems,
    prefix: &str,
    kind: ResourceKind,
    parts: Parts,
    registry: SchemaRegistry,
) -> Option<ResourceMapping> {
    let before = p.len();

    let ocs = parts.object_classes;
    let mut object_classes: Vec<String> = Vec::new();
    if ocs.get_ref().is_empty() {
        p.add(
            ocs.span(),
            format!("{prefix}.object_classes"),
            "is empty; list the entry's object classes, e.g. [\"top\", \"person\", \"organizationalPerson\", \"inetOrgPerson\"]",
        );
    }
    for (i, oc) in ocs.get_ref().iter().enumerate() {
        let key = format!("{prefix}.object_classes[{i}]");
        if !is_descriptor(oc.get_ref()) {
            p.add(
                oc.span(),
                key,
                format!("{:?} is not an object class name", oc.get_ref()),
            );
        } else if object_classes
            .iter()
            .any(|c| c.eq_ignore_ascii_case(oc.get_ref()))
        {
            p.add(
                oc.span(),
                key,
                format!("object class {:?} is listed twice", oc.get_ref()),
            );
        } else {
            object_classes.push(oc.get_ref().clone());
        }
    }

    let mut rules: Vec<AttributeRule> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    // File order, so that a clash is reported at the later of two names.
    let mut in_file_order: Vec<_> = parts.attributes.get_ref().iter().collect();
    in_file_order.sort_by_key(|(name, _)| name.span().start);
    for (name, rule) in in_file_order {
        let n = name.get_ref();
        let key = format!("{prefix}.attributes.{n}");
        if !is_attribute_description(n) {
            p.add(
                name.span(),
                key,
                format!("{n:?} is not an LDAP attribute name"),
            );
            continue;
        }
        if n.eq_ignore_ascii_case("objectClass") {
            p.add(
                name.span(),
                key,
                format!(
                    "objectClass is not mapped here; list the classes in {prefix}.object_classes"
                ),
            );
            continue;
        }
        if let Some(other) = names.iter().find(|o| o.eq_ignore_ascii_case(n)) {
            p.add(
                name.span(),
                key,
                format!("{n} and {other} are the same LDAP attribute (names are case-insensitive); keep one"),
            );
            continue;
        }
        names.push(n.clone());
        if let Some(r) = attribute_rule(p, &key, n, rule, &registry) {
            rules.push(r);
        }
    }

    let dn_key = format!("{prefix}.dn");
    let dn = match parse_dn_template(parts.dn.get_ref(), &registry) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(parts.dn.span(), &dn_key, e);
            None
        }
    };
    if let Some((rdn_attr, _, _)) = &dn {
        let has_rule = names.iter().any(|n| n.eq_ignore_ascii_case(rdn_attr));
        if !has_rule {
            p.add(
                parts.dn.span(),
                &dn_key,
                format!(
                    "the RDN attribute {rdn_attr} has no rule in [{prefix}.attributes]; add one, e.g. {rdn_attr} = \"{}\"",
                    if kind == ResourceKind::User { "userName" } else { "displayName" }
                ),
            );
        }
    }

    let mut id_attribute = None;
    if let Some(ida) = parts.id_attribute {
        let key = format!("{prefix}.id_attribute");
        let a = ida.get_ref();
        if !is_attribute_description(a) {
            p.add(
                ida.span(),
                key,
                format!("{a:?} is not an LDAP attribute name"),
            );
        } else if names.iter().any(|n| n.eq_ignore_ascii_case(a)) {
            p.add(
                ida.span(),
                key,
                format!("{a} is also mapped in [{prefix}.attributes]; an attribute has one source"),
            );
        } else {
            id_attribute = Some(a.clone());
        }
    }

    let adopt = dn
        .as_ref()
        .map(|(_, _, parent)| adopt_policy(p, prefix, kind, parent, parts.adopt));

    if p.len() > before {
        return None;
    }
    let (rdn_attr, rdn_value, parent_dn) = dn?;
    let adopt = adopt?;
    for r in &mut rules {
        if r.attribute.eq_ignore_ascii_case(&rdn_attr) {
            r.required = true;
        }
    }
    Some(ResourceMapping {
        kind,
        rdn_attr,
        rdn_value,
        parent_dn,
        object_classes,
        id_attribute,
        rules,
        registry,
        adopt,
    })
}

/// `[<prefix>.adopt]`, or the default policy when the table is absent.
fn adopt_policy(
    p: &mut Problems,
    prefix: &str,
    kind: ResourceKind,
    parent_dn: &str,
    raw: Option<&Spanned<RawAdopt>>,
) -> AdoptPolicy {
    let mut policy = AdoptPolicy::default_for(kind, parent_dn);
    let Some(raw) = raw else {
        return policy;
    };
    let table = raw.get_ref();
    if let Some(e) = &table.enabled {
        policy.enabled = *e.get_ref();
    }
    let dns = |p: &mut Problems, list: &Spanned<Vec<Str>>, key: &str| -> Vec<String> {
        let mut out = Vec::new();
        for (i, d) in list.get_ref().iter().enumerate() {
            match crate::dn::parse_dn(d.get_ref()) {
                Ok(parsed) if !parsed.is_empty() => out.push(crate::dn::dn_to_string(&parsed)),
                Ok(_) => p.add(
                    d.span(),
                    format!("{prefix}.adopt.{key}[{i}]"),
                    "is empty; give a DN",
                ),
                Err(e) => p.add(
                    d.span(),
                    format!("{prefix}.adopt.{key}[{i}]"),
                    format!("{:?} is not a DN: {e}", d.get_ref()),
                ),
            }
        }
        out
    };
    if let Some(under) = &table.under {
        if under.get_ref().is_empty() {
            p.add(
                under.span(),
                format!("{prefix}.adopt.under"),
                "is empty; list the subtrees where existing entries may be adopted, or set enabled = false",
            );
        }
        policy.under = dns(p, under, "under");
    }
    if let Some(never) = &table.never {
        policy.never = dns(p, never, "never");
    }
    for (raw, slot, key) in [
        (&table.filter, &mut policy.filter, "filter"),
        (
            &table.never_filter,
            &mut policy.never_filter,
            "never_filter",
        ),
    ] {
        if let Some(f) = raw {
            match super::adopt::check_filter_text(f.get_ref()) {
                Ok(()) => *slot = Some(f.get_ref().trim().to_string()),
                Err(e) => p.add(f.span(), format!("{prefix}.adopt.{key}"), e),
            }
        }
    }
    if let Some(k) = &table.keep_members {
        if kind == ResourceKind::Group {
            policy.keep_members = *k.get_ref();
        } else {
            p.add(
                k.span(),
                format!("{prefix}.adopt.keep_members"),
                "applies to groups only; move it to [group.adopt]",
            );
        }
    }
    policy
}

/// `"10000-59999"` → (10000, 59999).
fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi) = (
        lo.trim().parse::<u64>().ok()?,
        hi.trim().parse::<u64>().ok()?,
    );
    (lo <= hi).then_some((lo, hi))
}

fn attribute_rule(
    p: &mut Problems,
    key: &str,
    name: &str,
    rule: &Spanned<RawRule>,
    reg: &SchemaRegistry,
) -> Option<AttributeRule> {
    let t = match rule.get_ref() {
        RawRule::Short(s) => {
            let src = source(p, key, rule.span(), s, reg)?;
            return Some(AttributeRule {
                attribute: name.to_string(),
                sources: vec![src],
                transforms: Vec::new(),
                required: false,
                unique: false,
                resolve: None,
            });
        }
        RawRule::Full(t) => t,
    };
    let before = p.len();
    let mut sources = Vec::new();
    if let Some(a) = &t.allocate {
        if t.from.is_some() || t.value.is_some() {
            p.add(
                a.span(),
                format!("{key}.allocate"),
                "give allocate alone, without from or value",
            );
        }
        match parse_range(a.get_ref()) {
            Some((lo, hi)) => sources.push(Source::Allocated {
                attribute: name.to_string(),
                lo,
                hi,
            }),
            None => p.add(
                a.span(),
                format!("{key}.allocate"),
                format!(
                    "{:?} is not a range such as \"10000-59999\" (low-high, low <= high)",
                    a.get_ref()
                ),
            ),
        }
    }
    match (&t.from, &t.value) {
        _ if t.allocate.is_some() => {}
        (Some(_), Some(v)) => p.add(
            v.span(),
            format!("{key}.value"),
            "give either from or value, not both",
        ),
        (None, None) => p.add(
            rule.span(),
            key,
            "needs from = \"<SCIM path>\" (or a list of fallbacks) or value = \"<fixed value>\"",
        ),
        (Some(from), None) => {
            let items = OneOrMany::items(from);
            if items.is_empty() {
                p.add(
                    from.span(),
                    format!("{key}.from"),
                    "is an empty list; name at least one SCIM path",
                );
            }
            for (span, idx, s) in items {
                let k = match idx {
                    Some(i) => format!("{key}.from[{i}]"),
                    None => format!("{key}.from"),
                };
                if let Some(src) = source(p, &k, span, s, reg) {
                    sources.push(src);
                }
            }
        }
        (None, Some(v)) => {
            if v.get_ref().trim().is_empty() {
                p.add(
                    v.span(),
                    format!("{key}.value"),
                    "is empty; LDAP does not store empty values",
                );
            } else {
                sources.push(Source::Constant(v.get_ref().clone()));
            }
        }
    }
    let mut transforms = Vec::new();
    if let Some(tr) = &t.transform {
        for (span, idx, s) in OneOrMany::items(tr) {
            let k = match idx {
                Some(i) => format!("{key}.transform[{i}]"),
                None => format!("{key}.transform"),
            };
            match Transform::parse(s) {
                Ok(x) => transforms.push(x),
                Err(e) => p.add(span, k, e),
            }
        }
    }
    let mut resolve = None;
    if let Some(r) = &t.resolve {
        let k = format!("{key}.resolve");
        if t.value.is_some() {
            p.add(
                r.span(),
                k,
                "a fixed value cannot be resolved; resolve applies to SCIM ids",
            );
        } else {
            match parse_reference(r.get_ref()) {
                Ok(x) => resolve = Some(x),
                Err(e) => p.add(r.span(), k, e),
            }
        }
    }
    if let (Some(u), Some(_)) = (&t.unique, &t.value) {
        if *u.get_ref() {
            p.add(
                u.span(),
                format!("{key}.unique"),
                "a fixed value is the same for every resource, so it cannot be unique",
            );
        }
    }
    if p.len() > before {
        return None;
    }
    Some(AttributeRule {
        attribute: name.to_string(),
        sources,
        transforms,
        required: t.required.as_ref().is_some_and(|r| *r.get_ref()),
        unique: t.unique.as_ref().is_some_and(|u| *u.get_ref()),
        resolve,
    })
}

fn parse_reference(s: &str) -> Result<Reference, String> {
    if s == "dn" {
        return Ok(Reference::Dn);
    }
    if let Some(a) = s.strip_prefix("attribute:") {
        let a = a.trim();
        if is_attribute_description(a) {
            return Ok(Reference::Attribute(a.to_string()));
        }
        return Err(format!("{a:?} is not an LDAP attribute name"));
    }
    Err(format!("unknown reference {s:?} (expected \"dn\" or \"attribute:<ldap attribute>\", e.g. \"attribute:uid\")"))
}

fn source(
    p: &mut Problems,
    key: &str,
    span: Range<usize>,
    text: &str,
    reg: &SchemaRegistry,
) -> Option<Source> {
    let src = match parse_source(text) {
        Ok(s) => s,
        Err(e) => {
            p.add(span, key, e);
            return None;
        }
    };
    let checked = match &src {
        Source::Path(path) => check_path(path, reg),
        Source::Template(segs) => check_segments(segs, reg),
        Source::Constant(_) | Source::Allocated { .. } => Ok(()),
    };
    match checked {
        Ok(()) => Some(src),
        Err(e) => {
            p.add(span, key, e);
            None
        }
    }
}

fn check_segments(segs: &[Segment], reg: &SchemaRegistry) -> Result<(), String> {
    for seg in segs {
        if let Segment::Placeholder { path, .. } = seg {
            check_path(path, reg)?;
        }
    }
    Ok(())
}

/// The path must name an attribute the resource type's schemas define,
/// with a simple value (or a complex one with a `value` sub-attribute).
fn check_path(path: &ScimPath, reg: &SchemaRegistry) -> Result<(), String> {
    let pp = path.parsed();
    if pp.filter.is_none() && pp.sub.is_none() && reg.whole_extension(&pp.attr).is_some() {
        return Err(format!(
            "{:?} names a whole extension; name one of its attributes",
            path.as_str()
        ));
    }
    let known = || {
        reg.all()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((schema, def, subdef)) = reg.resolve(&pp.attr) else {
        if let Some(urn) = &pp.attr.urn {
            if reg.schema(urn).is_none() {
                return Err(format!(
                    "unknown schema {urn:?} in {:?} (known here: {}; declare custom ones in [[extension]])",
                    path.as_str(),
                    known()
                ));
            }
        }
        return Err(match &pp.attr.sub {
            Some(sub) if reg.resolve(&pp.attr.parent()).is_some() => {
                format!("{:?} has no sub-attribute {sub:?}", pp.attr.name)
            }
            _ => format!("{:?} is not an attribute of {}", pp.attr.name, known()),
        });
    };
    let leaf = match (subdef, &pp.sub) {
        (Some(sd), _) => sd,
        (None, Some(sub)) => def
            .sub(sub)
            .ok_or_else(|| format!("{:?} has no sub-attribute {sub:?}", def.name))?,
        (None, None) => def,
    };
    if leaf.ty == AttrType::Complex && leaf.sub("value").is_none() {
        let subs: Vec<&str> = leaf
            .sub_attributes
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        return Err(format!(
            "{} of {} is complex; name one of its sub-attributes ({})",
            leaf.name,
            schema.id,
            subs.join(", ")
        ));
    }
    Ok(())
}

/// `attr={placeholders},parent`: placeholders only in the RDN value (so
/// that the parent is one fixed DN), at least one of them, and a parent
/// that parses. Literal text keeps the DN syntax (the administrator
/// escapes it); it is stored unescaped and the whole rendered value is
/// escaped at once.
fn parse_dn_template(
    text: &str,
    reg: &SchemaRegistry,
) -> Result<(String, Vec<Segment>, String), String> {
    let segs = parse_template(text)?;
    check_segments(&segs, reg)?;
    let mut rdn: Vec<Segment> = Vec::new();
    let mut parent: Option<String> = None;
    for seg in segs {
        match (seg, &mut parent) {
            (Segment::Literal(l), Some(par)) => par.push_str(&l),
            (Segment::Literal(l), None) => {
                let mut escaped = false;
                let mut split = None;
                for (i, c) in l.char_indices() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == ',' {
                        split = Some(i);
                        break;
                    }
                }
                match split {
                    Some(i) => {
                        rdn.push(Segment::Literal(l[..i].to_string()));
                        parent = Some(l[i + 1..].to_string());
                    }
                    None => rdn.push(Segment::Literal(l)),
                }
            }
            (seg @ Segment::Placeholder { .. }, None) => rdn.push(seg),
            (Segment::Placeholder { path, .. }, Some(_)) => {
                return Err(format!(
                    "{{{}}} is outside the RDN; placeholders may only appear in the first component, the parent DN is fixed",
                    path.as_str()
                ))
            }
        }
    }
    let Some(parent) = parent else {
        return Err(
            "the DN has no parent; write e.g. uid={userName},ou=people,dc=example,dc=com"
                .to_string(),
        );
    };
    let parsed = parse_dn(&parent).map_err(|e| format!("bad parent DN {parent:?}: {e}"))?;
    if parsed.is_empty() {
        return Err("the parent DN is empty".to_string());
    }
    let parent = dn_to_string(&parsed);

    let Some(Segment::Literal(first)) = rdn.first() else {
        return Err("the DN must start with attribute=, e.g. uid={userName}".to_string());
    };
    let Some((attr, rest)) = first.split_once('=') else {
        return Err("the RDN has no '='; write e.g. uid={userName}".to_string());
    };
    let attr = attr.trim().to_string();
    if !is_descriptor(&attr) {
        return Err(format!("{attr:?} is not an attribute type"));
    }
    let mut value: Vec<Segment> = Vec::new();
    let rest = rest.trim_start();
    if !rest.is_empty() {
        value.push(Segment::Literal(rest.to_string()));
    }
    value.extend(rdn.into_iter().skip(1));
    if !value
        .iter()
        .any(|s| matches!(s, Segment::Placeholder { .. }))
    {
        return Err(format!(
            "the RDN {attr}=... must use a {{placeholder}} such as {{userName}}; a fixed RDN would give every entry the same DN"
        ));
    }
    let n = value.len();
    let mut out = Vec::with_capacity(n);
    for (i, seg) in value.into_iter().enumerate() {
        match seg {
            Segment::Literal(l) => {
                let l = if i + 1 == n {
                    trim_unescaped_end(&l)
                } else {
                    l.as_str()
                };
                out.push(Segment::Literal(unescape_rdn_literal(l, &attr)?));
            }
            seg => out.push(seg),
        }
    }
    Ok((attr, out, parent))
}

/// Drops trailing spaces unless the first of them is escaped (an odd
/// run of backslashes before it).
fn trim_unescaped_end(s: &str) -> &str {
    let trimmed = s.trim_end_matches(' ');
    let backslashes = trimmed.len() - trimmed.trim_end_matches('\\').len();
    if backslashes % 2 == 1 && trimmed.len() < s.len() {
        &s[..trimmed.len() + 1]
    } else {
        trimmed
    }
}

/// Unescapes the literal text of an RDN value (RFC 4514 escapes). A
/// trailing backslash (an escape cut by a placeholder), an unescaped `+`
/// (multi-valued RDNs are not supported) or a character that must be
/// escaped are errors.
fn unescape_rdn_literal(s: &str, attr: &str) -> Result<String, String> {
    let parsed = parse_dn(&format!("{attr}=x{s}x")).map_err(|e| {
        if s.contains('+') && !s.contains("\\+") {
            "multi-valued RDNs (attr=a+attr2=b) are not supported".to_string()
        } else {
            format!("bad literal text {s:?} in the RDN: {e}")
        }
    })?;
    match parsed.as_slice() {
        [rdn] if rdn.len() == 1 && !rdn[0].ber => {
            let v = &rdn[0].value;
            Ok(v[1..v.len() - 1].to_string())
        }
        [rdn] if rdn.len() > 1 => {
            Err("multi-valued RDNs (attr=a+attr2=b) are not supported".to_string())
        }
        _ => Err(format!("bad literal text {s:?} in the RDN")),
    }
}

fn user_policy(
    p: &mut Problems,
    raw: &RawFile,
    user: Option<&ResourceMapping>,
) -> Option<UserPolicy> {
    let before = p.len();
    let u = raw.user.get_ref();
    let managed = |a: &str| {
        user.is_some_and(|m| {
            m.managed_attributes()
                .iter()
                .any(|x| x.eq_ignore_ascii_case(a))
        })
    };
    let mut deactivate = DeactivatePolicy::default();
    match &u.deactivate {
        None => p.add(
            raw.user.span(),
            "user.deactivate",
            "missing: add [user.deactivate] to say what active=false does (set = { pwdAccountLockedTime = \"000001010000Z\" }, move_to, remove_from_groups or ad_user_account_control); without it a deactivated user could still log in",
        ),
        Some(d) => {
            let span = d.span();
            let d = d.get_ref();
            if let Some(set) = &d.set {
                for (name, values) in set.get_ref() {
                    let n = name.get_ref();
                    let key = format!("user.deactivate.set.{n}");
                    if !is_attribute_description(n) {
                        p.add(name.span(), key, format!("{n:?} is not an LDAP attribute name"));
                        continue;
                    }
                    if managed(n) {
                        p.add(
                            name.span(),
                            key,
                            format!("{n} is also mapped in [user.attributes]; the two would overwrite each other"),
                        );
                        continue;
                    }
                    if deactivate.set.keys().any(|k| k.eq_ignore_ascii_case(n)) {
                        p.add(name.span(), key, format!("{n} is listed twice (names are case-insensitive)"));
                        continue;
                    }
                    let items = OneOrMany::items(values);
                    if items.is_empty() || items.iter().any(|(_, _, v)| v.trim().is_empty()) {
                        p.add(values.span(), key, "needs a non-empty value; LDAP does not store empty values");
                        continue;
                    }
                    deactivate.set.insert(n.clone(), items.iter().map(|(_, _, v)| v.to_string()).collect());
                }
            }
            if let Some(m) = &d.move_to {
                match parse_dn(m.get_ref()) {
                    Ok(dn) if dn.is_empty() => p.add(m.span(), "user.deactivate.move_to", "is empty; give the DN of the OU"),
                    Ok(dn) => {
                        let dn = dn_to_string(&dn);
                        if user.is_some_and(|u| u.parent_dn().eq_ignore_ascii_case(&dn)) {
                            p.add(m.span(), "user.deactivate.move_to", "is the parent of active users too; give another OU");
                        } else {
                            deactivate.move_to = Some(dn);
                        }
                    }
                    Err(e) => p.add(m.span(), "user.deactivate.move_to", format!("bad DN: {e}")),
                }
            }
            if let Some(r) = &d.remove_from_groups {
                deactivate.remove_from_groups = *r.get_ref();
                if deactivate.remove_from_groups && raw.group.is_none() {
                    p.add(r.span(), "user.deactivate.remove_from_groups", "needs a [group] mapping; there are no group entries to remove the user from");
                }
            }
            if let Some(a) = &d.ad_user_account_control {
                deactivate.ad_user_account_control = *a.get_ref();
                if deactivate.ad_user_account_control
                    && (managed("userAccountControl")
                        || deactivate.set.keys().any(|k| k.eq_ignore_ascii_case("userAccountControl")))
                {
                    p.add(
                        a.span(),
                        "user.deactivate.ad_user_account_control",
                        "userAccountControl is also mapped or set; let only this flag change it",
                    );
                }
            }
            if deactivate == DeactivatePolicy::default() && p.len() == before {
                p.add(
                    span,
                    "user.deactivate",
                    "does nothing; give at least one of set, move_to, remove_from_groups = true, ad_user_account_control = true",
                );
            }
        }
    }
    let delete = match &u.delete {
        None => DeleteAction::Delete,
        Some(d) => match d.get_ref().action.get_ref().as_str() {
            "delete" => DeleteAction::Delete,
            "deactivate" => DeleteAction::Deactivate,
            other => {
                p.add(
                    d.get_ref().action.span(),
                    "user.delete.action",
                    format!("unknown action {other:?} (expected delete or deactivate)"),
                );
                DeleteAction::Delete
            }
        },
    };
    (p.len() == before).then_some(UserPolicy { deactivate, delete })
}

fn members(
    p: &mut Problems,
    g: &super::raw::RawGroup,
    group: Option<&ResourceMapping>,
    user: Option<&ResourceMapping>,
) -> Option<Members> {
    let before = p.len();
    let m = g.members.get_ref();
    let attribute = m.attribute.get_ref().clone();
    if !is_attribute_description(&attribute) {
        p.add(
            m.attribute.span(),
            "group.members.attribute",
            format!("{attribute:?} is not an LDAP attribute name"),
        );
    } else if group.is_some_and(|g| {
        g.managed_attributes()
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&attribute))
    }) {
        p.add(
            m.attribute.span(),
            "group.members.attribute",
            format!("{attribute} is also mapped in [group.attributes]; members are written only through [group.members]"),
        );
    }
    let value = member_reference(p, m.value.as_ref(), "group.members.value", user);
    let empty = match m.empty.get_ref() {
        RawEmpty::Word(w) if w == "allow" => EmptyGroup::Allow,
        RawEmpty::Word(w) => {
            p.add(
                m.empty.span(),
                "group.members.empty",
                format!("unknown value {w:?} (expected \"allow\" or {{ placeholder = \"<dn>\" }})"),
            );
            EmptyGroup::Allow
        }
        RawEmpty::Placeholder(ph) => {
            let text = ph.placeholder.get_ref();
            let key = "group.members.empty.placeholder";
            match (&value, parse_dn(text)) {
                (_, _) if text.trim().is_empty() => {
                    p.add(ph.placeholder.span(), key, "is empty");
                    EmptyGroup::Allow
                }
                (Reference::Dn, Ok(dn)) => EmptyGroup::Placeholder(dn_to_string(&dn)),
                (Reference::Dn, Err(e)) => {
                    p.add(ph.placeholder.span(), key, format!("bad DN: {e}"));
                    EmptyGroup::Allow
                }
                (Reference::Attribute(_), _) => EmptyGroup::Placeholder(text.clone()),
            }
        }
    };
    let mut also: Vec<MemberAttribute> = Vec::new();
    for (i, a) in m.also.iter().flat_map(|v| v.get_ref().iter()).enumerate() {
        let a = a.get_ref();
        let key = format!("group.members.also[{i}]");
        if let Some(e) = &a.empty {
            p.add(
                e.span(),
                format!("{key}.empty"),
                "is not set per attribute: the group's emptiness (and its placeholder) belongs to [group.members] itself; an attribute listed in also is removed while it has no member values",
            );
        }
        if let Some(r) = &a.refint {
            p.add(
                r.span(),
                format!("{key}.refint"),
                "is not set per attribute: [group.members] refint covers every DN-valued member attribute of the table",
            );
        }
        let name = a.attribute.get_ref().clone();
        let akey = format!("{key}.attribute");
        if !is_attribute_description(&name) {
            p.add(
                a.attribute.span(),
                akey,
                format!("{name:?} is not an LDAP attribute name"),
            );
        } else if name.eq_ignore_ascii_case(&attribute)
            || also.iter().any(|x| x.attribute.eq_ignore_ascii_case(&name))
        {
            p.add(
                a.attribute.span(),
                akey,
                format!("{name} is already a member attribute of this table"),
            );
        } else if group.is_some_and(|g| {
            g.managed_attributes()
                .iter()
                .any(|x| x.eq_ignore_ascii_case(&name))
        }) {
            p.add(
                a.attribute.span(),
                akey,
                format!("{name} is also mapped in [group.attributes]; members are written only through [group.members]"),
            );
        }
        let value = member_reference(p, a.value.as_ref(), &format!("{key}.value"), user);
        also.push(MemberAttribute {
            attribute: name,
            value,
        });
    }
    (p.len() == before).then_some(Members {
        refint: m.refint,
        attribute,
        value,
        empty,
        also,
    })
}

/// A member attribute's `value`: "dn" when absent; an attribute of the
/// member entry must be one the user mapping writes.
fn member_reference(
    p: &mut Problems,
    value: Option<&Str>,
    key: &str,
    user: Option<&ResourceMapping>,
) -> Reference {
    let Some(v) = value else {
        return Reference::Dn;
    };
    match parse_reference(v.get_ref()) {
        Ok(Reference::Attribute(a)) => {
            let user_writes = user.is_none_or(|u| {
                u.managed_attributes()
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(&a))
            });
            if !user_writes {
                p.add(
                    v.span(),
                    key,
                    format!("the user mapping does not write {a}, so members would have no value; map {a} in [user.attributes]"),
                );
            }
            Reference::Attribute(a)
        }
        Ok(r) => r,
        Err(e) => {
            p.add(v.span(), key, e);
            Reference::Dn
        }
    }
}

fn extensions(p: &mut Problems, raw: &[Spanned<super::raw::RawExtension>]) -> Vec<ExtensionDecl> {
    let mut out: Vec<ExtensionDecl> = Vec::new();
    for (i, ext) in raw.iter().enumerate() {
        let before = p.len();
        let e = ext.get_ref();
        let key = format!("extension[{i}]");
        let urn = e.urn.get_ref().trim().to_string();
        let urn_ok = urn.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("urn:"))
            && urn.len() > 4
            && !urn.ends_with(':')
            && urn
                .chars()
                .all(|c| c.is_ascii_graphic() && !"[]\"{}".contains(c));
        if !urn_ok {
            p.add(
                e.urn.span(),
                format!("{key}.urn"),
                format!("{urn:?} is not a schema URN (urn:...:User)"),
            );
        } else if [CORE_USER_URN, CORE_GROUP_URN, ENTERPRISE_USER_URN]
            .iter()
            .any(|u| u.eq_ignore_ascii_case(&urn))
        {
            p.add(
                e.urn.span(),
                format!("{key}.urn"),
                format!("{urn} is built in; declare only custom extensions"),
            );
        } else if out.iter().any(|o| o.urn.eq_ignore_ascii_case(&urn)) {
            p.add(
                e.urn.span(),
                format!("{key}.urn"),
                format!("{urn} is declared twice"),
            );
        }
        let resource = match e.resource.get_ref().to_ascii_lowercase().as_str() {
            "user" => ResourceKind::User,
            "group" => ResourceKind::Group,
            other => {
                p.add(
                    e.resource.span(),
                    format!("{key}.resource"),
                    format!("unknown resource {other:?} (expected User or Group)"),
                );
                ResourceKind::User
            }
        };
        let mut attributes: Vec<ExtensionAttribute> = Vec::new();
        if e.attributes.get_ref().is_empty() {
            p.add(
                e.attributes.span(),
                format!("{key}.attributes"),
                "is empty; declare the extension's attributes",
            );
        }
        for (j, a) in e.attributes.get_ref().iter().enumerate() {
            let a = a.get_ref();
            let akey = format!("{key}.attributes[{j}]");
            let name = a.name.get_ref();
            let mut chars = name.chars();
            let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok {
                p.add(
                    a.name.span(),
                    format!("{akey}.name"),
                    format!("{name:?} is not a SCIM attribute name"),
                );
            } else if attributes.iter().any(|x| x.name.eq_ignore_ascii_case(name)) {
                p.add(
                    a.name.span(),
                    format!("{akey}.name"),
                    format!("{name} is declared twice (names are case-insensitive)"),
                );
            }
            let kind = match a.kind.as_ref().map(|k| k.get_ref().as_str()) {
                None | Some("string") => AttrType::String,
                Some("boolean") => AttrType::Boolean,
                Some("integer") => AttrType::Integer,
                Some("decimal") => AttrType::Decimal,
                Some("dateTime") => AttrType::DateTime,
                Some("reference") => AttrType::Reference,
                Some("binary") => AttrType::Binary,
                Some(other) => {
                    let span = a.kind.as_ref().map_or(0..0, Spanned::span);
                    p.add(
                        span,
                        format!("{akey}.type"),
                        format!("unknown type {other:?} (expected string, boolean, integer, decimal, dateTime, reference or binary; complex is not supported)"),
                    );
                    AttrType::String
                }
            };
            attributes.push(ExtensionAttribute {
                name: name.clone(),
                kind,
                multi_valued: a.multi_valued.unwrap_or(false),
                case_exact: a.case_exact.unwrap_or(false),
                required: a.required.unwrap_or(false),
            });
        }
        if p.len() == before {
            out.push(ExtensionDecl {
                urn,
                resource,
                attributes,
            });
        }
    }
    out
}
