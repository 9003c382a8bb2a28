-- Argo CD health of an ExportRequest (exportd.dev/v1alpha1). Install it in argocd-cm as
--   resource.customizations.health.exportd.dev_ExportRequest: |
--     <this file>
-- Healthy once the export succeeded (or was cancelled on request), Degraded when it failed,
-- Progressing while it waits or runs, and while the operator has not yet seen the current
-- generation (status.observedGeneration).
local health = {status = "Progressing", message = "waiting for the exportd operator"}
if obj.status == nil then
  return health
end
local status = obj.status
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  health.message = "the operator has not seen the latest change yet"
  return health
end
local phase = status.phase
if phase == "Succeeded" then
  health.status = "Healthy"
  health.message = "export stored" .. (status.rows ~= nil and (": " .. status.rows .. " rows") or "")
elseif phase == "Cancelled" then
  health.status = "Healthy"
  health.message = status.message or "cancelled on request"
elseif phase == "Failed" then
  health.status = "Degraded"
  health.message = (status.reason or "Failed") .. ": " .. (status.message or "")
elseif phase == "Queued" then
  health.message = "queued at position " .. tostring(status.queuePosition or "?")
elseif phase == "Running" then
  health.message = "running" .. (status.rows ~= nil and (", " .. status.rows .. " rows") or "")
end
return health
