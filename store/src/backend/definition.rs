//! The part of the backend contract behind agent definitions ([`crate::AgentDefinition`]): creating an agent from
//! one, replacing an agent's, and finding an agent by the names an operator gives it.

use uuid::Uuid;

use crate::definition::{AgentDefinition, AgentPlacement, DefinedAgent};
use crate::StoreError;

super::contract! {
    /// Each write is one transaction; names in the definition arrive unique.
    pub(crate) trait DefinitionSql {
        /// The owner (when missing), a template with its version, a workspace with a succeeded `start` build and its
        /// resource, the agent with a fresh token, and the definition's rows.
        async fn create_defined_agent(
            &self,
            placement: AgentPlacement<'_>,
            definition: &AgentDefinition,
        ) -> Result<DefinedAgent, StoreError>;
        /// Rewrite the agent row's defined columns and bring its other rows to the definition, matching parts by
        /// name; `false` (nothing written) when the agent is not a live top-level agent.
        async fn replace_agent_definition(&self, agent_id: Uuid, definition: &AgentDefinition) -> Result<bool, StoreError>;
        /// The live top-level agent of that name in the latest build of the owner's live workspace.
        async fn find_agent(&self, owner: &str, workspace: &str, agent: &str) -> Result<Option<Uuid>, StoreError>;
    }
}
