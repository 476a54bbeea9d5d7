//! Servers: their module settings (secrets sealed), limits and groups.

use super::*;

impl Engine {
    pub async fn create_server(&self, input: ServerCreate) -> Result<Server> {
        let mut p = Problems::default();
        let name = p.take("name", Handle::parse(&input.name));
        let group = p.take(
            "group",
            Handle::parse(input.group.as_deref().unwrap_or(DEFAULT_GROUP)),
        );
        let max_concurrent = input.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
        check_limits(&mut p, max_concurrent, input.max_per_second);
        reject_markers(&mut p, "settings", &input.settings);
        let settings = match self.module(&mut p, &input.module) {
            Some(info) if p.is_empty() => {
                self.complete_settings(&mut p, info, SchemaScope::Server, &input.settings)
            }
            _ => None,
        };
        p.finish()?;
        let new = NewServer {
            name: name.expect("checked"),
            module: input.module,
            group: group.expect("checked"),
            settings: settings.expect("checked"),
            max_concurrent,
            max_per_second: input.max_per_second,
            enabled: input.enabled.unwrap_or(true),
        };
        Ok(self.store.insert_server(&new).await?)
    }

    pub async fn find_server(&self, r: &RecordRef) -> Result<Server> {
        let seen = self.catalog_now().await?;
        let kept = self.catalog.get(seen, |c| match r {
            RecordRef::Id(id) => c.servers_by_id.get(&ServerId(*id)).cloned(),
            RecordRef::Name(n) => c.servers_by_name.get(n).cloned(),
        });
        if let Some(s) = kept {
            return Ok(s);
        }
        let found = match r {
            RecordRef::Id(id) => self.store.get_server(ServerId(*id)).await?,
            RecordRef::Name(n) => self.store.get_server_by_name(n).await?,
        };
        if let Some(s) = &found {
            self.catalog.put(seen, |c| {
                c.servers_by_id.insert(s.id, s.clone());
                c.servers_by_name.insert(s.name.to_string(), s.clone());
            });
        }
        found.ok_or_else(|| not_found("server", r))
    }

    pub async fn update_server(&self, r: &RecordRef, patch: ServerPatch) -> Result<Server> {
        let mut server = self.find_server(r).await?;
        let mut p = Problems::default();
        if let Some(n) = &patch.name {
            if let Some(n) = p.take("name", Handle::parse(n)) {
                server.name = n;
            }
        }
        if let Some(g) = &patch.group {
            if let Some(g) = p.take("group", Handle::parse(g)) {
                server.group = g;
            }
        }
        if let Some(m) = patch.max_concurrent {
            server.max_concurrent = m;
        }
        server.max_per_second = patch.max_per_second.apply(server.max_per_second);
        check_limits(&mut p, server.max_concurrent, server.max_per_second);
        if let Some(s) = &patch.settings {
            reject_markers(&mut p, "settings", s);
            if p.is_empty() {
                let merged = merge_patch(&server.settings, s);
                let info = self.module(&mut p, &server.module);
                if let Some(info) = info {
                    if let Some(s) =
                        self.complete_settings(&mut p, info, SchemaScope::Server, &merged)
                    {
                        server.settings = s;
                    }
                }
            }
        }
        p.finish()?;
        if let Some(e) = patch.enabled {
            server.enabled = e;
        }
        Ok(self.store.update_server(&server).await?)
    }

    pub async fn delete_server(&self, r: &RecordRef) -> Result<()> {
        let server = self.find_server(r).await?;
        let services = self
            .store
            .count_services(&ServiceFilter {
                server_id: Some(server.id),
                ..Default::default()
            })
            .await?;
        if services > 0 {
            return Err(conflict(format!(
                "server '{}' has {services} service(s); move or delete them first, or disable the server",
                server.name
            )));
        }
        self.store.delete_server(server.id).await?;
        Ok(())
    }

    pub async fn list_servers(&self, f: &ServerFilter, page: PageRequest) -> Result<Page<Server>> {
        Ok(self.store.list_servers(f, page).await?)
    }
}
