"""EXPERIMENT: the DPO model's implicit reward, sum(log pi_dpo - log pi_sft), on held-out labelled pairs against gold.

    python bench/dpo_implicit_reward.py out/rlhf_dpo/ckpt.pt out/sft/ckpt.pt out/labels/prefs_helpful_val.jsonl
"""
import sys, json, collections, torch, torch.nn.functional as F
torch.set_num_threads(1)
from nanotrain.checkpoint import load_model
from nanotrain.reward import encode_reply, right_pad
pol,tok,_=load_model(sys.argv[1], stages=("rlhf","sft")); pol.eval(); ref,_,_=load_model(sys.argv[2]); ref.eval()
ps=[json.loads(l) for l in open(sys.argv[3])]
ps=[p for p in ps if p["gold_chosen"]!=p["gold_rejected"]]
def lps(m, prompts, replies):
    out=[]
    for i in range(0,len(prompts),64):
        rows=[encode_reply(tok,p,r,256) for p,r in zip(prompts[i:i+64],replies[i:i+64])]
        idx,_=right_pad([r[0] for r in rows],tok.pad)
        with torch.no_grad(): lp=F.log_softmax(m(idx)[0].float(),-1)
        for b,(ids,st) in enumerate(rows):
            pos=torch.arange(max(st,1)-1,len(ids)-1); t=lp[b,pos,torch.tensor(ids)[pos+1]]
            out.append((t.sum().item(), t.mean().item()))
    return out
P=[p["prompt"] for p in ps]
pc,pr=lps(pol,P,[p["chosen"] for p in ps]),lps(pol,P,[p["rejected"] for p in ps])
rc,rr=lps(ref,P,[p["chosen"] for p in ps]),lps(ref,P,[p["rejected"] for p in ps])
for name,f in [("ratio sum",lambda a,b:a[0]-b[0]),("ratio mean",lambda a,b:a[1]-b[1]),("policy mean",lambda a,b:a[1])]:
    tot=0; by=collections.defaultdict(lambda:[0,0])
    for i,p in enumerate(ps):
        ok=((f(pc[i],rc[i])-f(pr[i],rr[i]))>0)==(p["gold_chosen"]>p["gold_rejected"]); tot+=ok; by[p["kind"]][0]+=ok; by[p["kind"]][1]+=1
    print(f"{name:12s} {tot/len(ps):.1%} "+" ".join(f"{k}:{o}/{m_}" for k,(o,m_) in sorted(by.items(),key=lambda x:-x[1][1])[:8]))
