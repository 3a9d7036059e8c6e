/* autostop wait page: polls the start status and reloads onto the app once
   it is ready. Served by the agent at /.autostop/wait.js (same origin, no
   other request); every built-in theme includes it, and a user theme may:
   <script src="/.autostop/wait.js"></script> at the end of <body>.
   Reads from <body>: data-estimated, data-elapsed, data-status (seconds and
   state as rendered); fills #bar (width), #pct, #eta ("12 s of about
   40 s"), #err and #steps (one <li data-phase> per step of the start, with
   .label, .phase and .for spans; text only) when present; sets
   body[data-status] for CSS and calls window.onStatus(state, status) when
   the state changes. See themes/README.md. */
(function(){
var b=document.body,d=b.dataset,est=+d.estimated||30,base=+d.elapsed||0,t0=Date.now(),st=d.status;
function $(i){return document.getElementById(i)||{style:{}}}
function fmt(s){s=Math.max(1,Math.round(s));return s<60?s+' s':Math.floor(s/60)+' min '+s%60+' s'}
function paint(){
var el=base+(Date.now()-t0)/1000,p=st=='ready'?1:Math.min(.95,el/Math.max(est,1));
$('bar').style.width=(p*100).toFixed(1)+'%';
$('pct').textContent=Math.floor(p*100)+'%';
$('eta').textContent=st=='failed'?'start failed':st=='ready'?'ready':fmt(el)+' of about '+fmt(est)+(el<est?'':' \u2014 almost there\u2026');
}
function span(li,cls,txt){var e=document.createElement('span');e.className=cls;e.textContent=txt;li.appendChild(e)}
function steps(list){
var ul=document.getElementById('steps');if(!ul||!list)return;
while(ul.firstChild)ul.removeChild(ul.firstChild);
list.forEach(function(s){var li=document.createElement('li');li.setAttribute('data-phase',String(s.phase));
span(li,'label',String(s.label));span(li,'phase',String(s.text));span(li,'for',(+s.for_s||0)+' s');ul.appendChild(li)});
}
function set(s){
var was=st;st=s.state;b.dataset.status=st;
if(s.estimated_s>0)est=s.estimated_s;
if(s.elapsed_s>=0){base=s.elapsed_s;t0=Date.now()}
if(st=='failed')$('err').textContent=s.error||'The service failed to start.';
steps(s.steps);
if(window.onStatus&&st!=was)window.onStatus(st,s);
paint();
if(st=='ready')setTimeout(function(){location.reload()},300);
}
function poll(){
fetch('/.autostop/status',{cache:'no-store'}).then(function(r){
return r.json().then(function(s){return s&&s.state?s:{state:'ready'}},function(){return r.status<500?{state:'ready'}:null});
},function(){return null}).then(function(s){
if(s)set(s);
if(st!='ready')setTimeout(poll,st=='failed'?3000:500);
});
}
paint();setInterval(paint,250);setTimeout(poll,500);
})();
