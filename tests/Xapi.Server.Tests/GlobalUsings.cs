global using Xapi.Server.Api;
global using Xapi.Server.Dispatch;
global using Xapi.Server.Hosting;
global using Xapi.Server.Operations;
global using Xapi.Server.Sessions;
global using Xapi.Server.Tasks;
